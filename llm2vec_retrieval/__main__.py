"""`python -m llm2vec_retrieval` runs the command line."""

from .cli import main

raise SystemExit(main())
