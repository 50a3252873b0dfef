"""`python -m llm2vec_retrieval.training train ...|export ...` (the same commands the main CLI registers)."""

from .cli import main

raise SystemExit(main())
