"""Task instructions for instruction-prefixed query encoding.

LLM2Vec (BehnamGhader et al., 2024, arXiv 2404.05961) evaluates on MTEB with the
E5-style task instructions of Wang et al. (2023, arXiv 2401.00368): the query side
of a retrieval task and both sides of a symmetric (STS) task carry a one-sentence
instruction; documents carry none. This module is the one place these strings live.

Only the instruction text is stored here; how it is joined to the text (and kept
out of the pooled vector) is the encoder's job.
"""

from __future__ import annotations

# Retrieval tasks (BEIR / MTEB): applied to queries only.
RETRIEVAL_INSTRUCTIONS: dict[str, str] = {
    "ArguAna": "Given a claim, find documents that refute the claim:",
    "ClimateFEVER": "Given a claim about climate change, retrieve documents that support or refute the claim:",
    "CQADupstack": "Given a question, retrieve detailed question descriptions from Stackexchange that are duplicates to the given question:",
    "DBPedia": "Given a query, retrieve relevant entity descriptions from DBPedia:",
    "FEVER": "Given a claim, retrieve documents that support or refute the claim:",
    "FiQA2018": "Given a financial question, retrieve user replies that best answer the question:",
    "HotpotQA": "Given a multi-hop question, retrieve documents that can help answer the question:",
    "MSMARCO": "Given a web search query, retrieve relevant passages that answer the query:",
    "NFCorpus": "Given a question, retrieve relevant documents that best answer the question:",
    "NQ": "Given a question, retrieve Wikipedia passages that answer the question:",
    "QuoraRetrieval": "Given a question, retrieve questions that are semantically equivalent to the given question:",
    "SCIDOCS": "Given a scientific paper title, retrieve paper abstracts that are cited by the given paper:",
    "SciFact": "Given a scientific claim, retrieve documents that support or refute the claim:",
    "Touche2020": "Given a question, retrieve detailed and persuasive arguments that answer the question:",
    "TRECCOVID": "Given a query on COVID-19, retrieve documents that answer the query:",
}

# Symmetric similarity tasks: both sides get the same instruction.
STS_INSTRUCTION = "Retrieve semantically similar text:"
STS_TASKS = (
    "STS12",
    "STS13",
    "STS14",
    "STS15",
    "STS16",
    "STS17",
    "STS22",
    "STSBenchmark",
    "SICK-R",
    "BIOSSES",
)

INSTRUCTIONS: dict[str, str] = {
    **RETRIEVAL_INSTRUCTIONS,
    **{task: STS_INSTRUCTION for task in STS_TASKS},
}

# Used when a caller asks for a query encoding and names neither task nor instruction.
DEFAULT_QUERY_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query:"
)

_ALIASES = {name.lower().replace("-", "").replace("_", ""): name for name in INSTRUCTIONS}
_ALIASES.update({"stsb": "STSBenchmark", "stsbenchmark": "STSBenchmark", "trec-covid": "TRECCOVID"})


def get_instruction(task: str) -> str:
    """Return the registered instruction for a task name (case and '-'/'_' insensitive).

    >>> get_instruction("scifact")
    'Given a scientific claim, retrieve documents that support or refute the claim:'
    """
    key = task.lower().replace("-", "").replace("_", "")
    if key not in _ALIASES:
        valid = ", ".join(sorted(INSTRUCTIONS))
        raise KeyError(f"Unknown task {task!r}. Valid tasks are: {valid}")
    return INSTRUCTIONS[_ALIASES[key]]


def is_symmetric(task: str) -> bool:
    """True for tasks whose two sides are both encoded with the instruction (STS)."""
    return get_instruction(task) == STS_INSTRUCTION
