"""The training objectives, as plain tensor functions (tested against hand computations).

MNTP (paper §2.2): tokens are selected with probability p and corrupted ("bert": 80% the
mask token, 10% a random token, 10% unchanged, as HF DataCollatorForLanguageModeling;
"all-mask": always the mask token). A selected token at position i is predicted from the
model's output at position i-1, so the labels are shifted: `labels[:, i]` holds the
original token at i when i was selected, else -100, and the loss pairs logits[:, i-1]
with labels[:, i]. Position 0 has no predecessor and is never selected; neither are
special tokens (BOS/EOS/PAD).

Contrastive (SimCSE and supervised): cosine similarities divided by a temperature,
cross-entropy with the matching positive as the target (InfoNCE), candidates are every
positive in the batch plus every hard negative (official HardNegativeNLLLoss).

Listwise distillation (supervised, optional): KL(teacher || student) between the softmax
distributions of a teacher's and the student's scores over the same candidates (RocketQAv2,
Ren et al. 2021, arXiv 2110.07367; the listwise loss of many distilled retrievers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError

IGNORE = -100


def mask_tokens(
    input_ids: torch.Tensor,
    special_mask: torch.Tensor,
    probability: float,
    mask_token_id: int,
    vocab_size: int,
    mode: str = "bert",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrupted inputs, labels): labels are the original ids at selected positions, -100 elsewhere."""
    labels = input_ids.clone()
    inputs = input_ids.clone()
    prob = torch.full(input_ids.shape, float(probability))
    prob.masked_fill_(special_mask.bool(), 0.0)
    prob[:, 0] = 0.0  # nothing before position 0 can predict it
    selected = torch.bernoulli(prob, generator=generator).bool()
    labels[~selected] = IGNORE
    if mode == "all-mask":
        inputs[selected] = mask_token_id
    elif mode == "bert":
        replace = (
            torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool() & selected
        )
        inputs[replace] = mask_token_id
        randomize = (
            torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool()
            & selected
            & ~replace
        )
        random_ids = torch.randint(
            vocab_size, input_ids.shape, dtype=input_ids.dtype, generator=generator
        )
        inputs[randomize] = random_ids[randomize]
    else:
        raise InvalidInputError(f"unknown masking mode {mode!r}. Valid modes are: bert, all-mask")
    return inputs, labels


def mntp_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module) -> torch.Tensor:
    """Cross-entropy of the token at i predicted from the hidden state at i-1.

    Only positions with a label are projected to the vocabulary (saves the (batch, seq, vocab)
    logits tensor).
    """
    target = labels[:, 1:]
    keep = target != IGNORE
    if not keep.any():
        return hidden.sum() * 0.0
    states = hidden[:, :-1][keep]
    logits = lm_head(states).float()
    return F.cross_entropy(logits, target[keep])


def contrastive_scores(
    q: torch.Tensor, candidates: torch.Tensor, temperature: float
) -> torch.Tensor:
    """cos(q_i, c_j) / temperature, shape (len(q), len(candidates))."""
    return F.normalize(q.float(), dim=-1) @ F.normalize(candidates.float(), dim=-1).T / temperature


def false_negative_mask(
    q: torch.Tensor,
    candidates: torch.Tensor,
    margin: float | None,
    query_texts: list[str] | None = None,
    candidate_texts: list[str] | None = None,
) -> torch.Tensor:
    """True where candidate j must not count as a negative for query i.

    Candidate i (query i's own positive) is never masked. Another candidate is masked when
    (a) its text equals query i's positive text or query i's own text (a duplicate is a
    positive, not a negative), (a') it is the positive of a row whose query text equals
    query i's (anchors repeat, one row per positive: each is a positive of that anchor),
    or (b) `margin` is not None and
    cos(q_i, c_j) > cos(q_i, c_i) + margin, i.e. it scores clearly above the labelled
    positive, which in mined data usually means an unlabelled positive (the rule of
    GTE / Qwen3-Embedding; margin 0.1 by default).
    """
    n = q.shape[0]
    with torch.no_grad():
        mask = torch.zeros((n, candidates.shape[0]), dtype=torch.bool, device=q.device)
        if margin is not None:
            sims = F.normalize(q.float(), dim=-1) @ F.normalize(candidates.float(), dim=-1).T
            positive = sims[torch.arange(n), torch.arange(n)]
            mask |= sims > positive[:, None] + margin
        if candidate_texts is not None:
            positives = candidate_texts[:n]
            for i in range(n):
                for j, text in enumerate(candidate_texts):
                    if j != i and (
                        text == positives[i] or (query_texts is not None and text == query_texts[i])
                    ):
                        mask[i, j] = True
        if query_texts is not None:
            for i in range(n):
                for j in range(n):
                    if j != i and query_texts[j] == query_texts[i]:
                        mask[i, j] = True
        mask[torch.arange(n), torch.arange(n)] = False
    return mask


def info_nce(
    q: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: float = 0.05,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """-mean_i log softmax_j(cos(q_i, c_j) / T)[i], candidates c = [positives; negatives].

    `mask` (bool, (n, n_candidates)) removes candidates from query i's softmax.
    """
    candidates = (
        positives
        if negatives is None or negatives.shape[0] == 0
        else torch.cat([positives, negatives])
    )
    scores = contrastive_scores(q, candidates, temperature)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    labels = torch.arange(q.shape[0], device=scores.device)
    return F.cross_entropy(scores, labels)


#: What a masked candidate's logit becomes in `listwise_kl`: its probability is 0 to float32
#: precision, and unlike -inf it keeps 0 * log 0 out of the KL (no NaN).
_MASKED_LOGIT = -1e4


def listwise_kl(
    q: torch.Tensor,
    candidates: torch.Tensor,
    teacher_scores: torch.Tensor,
    temperature: float,
    teacher_temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """mean_i KL(softmax(t_i / T_t) || softmax(cos(q_i, c) / T)) over query i's candidates.

    ``teacher_scores``: (len(q), len(candidates)) teacher similarities; ``mask`` (bool, same
    shape) removes candidates from both distributions (as in `info_nce`)."""
    if teacher_scores.shape != (q.shape[0], candidates.shape[0]):
        raise InvalidInputError(
            f"teacher scores have shape {tuple(teacher_scores.shape)}, expected "
            f"{(q.shape[0], candidates.shape[0])}"
        )
    student = contrastive_scores(q, candidates, temperature)
    teacher = teacher_scores.to(student.device, torch.float32) / teacher_temperature
    if mask is not None:
        student = student.masked_fill(mask, _MASKED_LOGIT)
        teacher = teacher.masked_fill(mask, _MASKED_LOGIT)
    return F.kl_div(
        F.log_softmax(student, dim=-1),
        F.log_softmax(teacher, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
