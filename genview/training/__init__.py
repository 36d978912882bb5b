"""Training-side library: where generated views come from, the pair dataset (Eq. 6) and quality weights."""
