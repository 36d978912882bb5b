"""The method's defaults that settings and commands need without importing torch."""

FG_FRACTION = 0.4  # share of all sampled tokens that are foreground: a = 60th percentile (official code)
