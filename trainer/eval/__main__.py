"""`python -m trainer.eval linear|knn|semi …` and `python -m trainer.eval export …`."""

from trainer.eval.cli import main

main()
