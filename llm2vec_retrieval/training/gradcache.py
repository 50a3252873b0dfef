"""GradCache (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup", arXiv 2101.06983): a contrastive loss over a large batch with the memory
of a small one.

1. Embed every chunk of `chunk_size` texts without building a graph, remembering the RNG
   state before each chunk (dropout).
2. Compute the loss on the full batch of (detached, grad-requiring) embeddings and
   backpropagate it to the embeddings only: d loss / d embedding, cached.
3. Embed each chunk again, with a graph and the remembered RNG state (so dropout draws the
   same masks and the embeddings equal step 1's), and backpropagate the cached embedding
   gradients through it: sum_k <grad_k, emb_k>.backward().

The parameter gradients equal those of the full-batch loss (tested with dropout on and off).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch


class RngState:
    """Snapshot of the CPU and CUDA generators; `restore()` is a context manager."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else None
        )

    @contextlib.contextmanager
    def restore(self) -> Iterator[None]:
        devices = list(range(len(self.cuda))) if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


def grad_cache_step(
    embed: Callable[[object], torch.Tensor],
    groups: Sequence[Sequence[object]],
    loss_fn: Callable[..., torch.Tensor],
    backward: Callable[[torch.Tensor], None] | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> tuple[torch.Tensor, int]:
    """One GradCache forward/backward. Returns (detached loss, number of forward chunks).

    groups: for each embedding group (queries, positives, negatives...), the list of input
        chunks; `embed(chunk)` returns that chunk's (n, dim) embeddings.
    loss_fn(*group_embeddings): the contrastive loss on the full batch.
    backward: how to backpropagate a surrogate scalar (default `.backward()`; pass
        `accelerator.backward`). no_sync: a context manager factory suppressing gradient
        all-reduce (DDP) for all chunk backwards but the last.
    """
    backward = backward or (lambda t: t.backward())
    # 1. embeddings without a graph
    states: list[list[RngState]] = []
    sizes: list[list[int]] = []
    reps: list[torch.Tensor] = []
    for chunks in groups:
        group_states, group_reps = [], []
        for chunk in chunks:
            group_states.append(RngState())
            with torch.no_grad():
                group_reps.append(embed(chunk).detach())
        states.append(group_states)
        sizes.append([r.shape[0] for r in group_reps])
        reps.append(torch.cat(group_reps).requires_grad_(True))
    # 2. loss on the full batch, gradients w.r.t. the embeddings only
    loss = loss_fn(*reps)
    cached = torch.autograd.grad(loss, reps)
    # 3. re-embed each chunk with a graph (same RNG state) and push the cached gradients through
    jobs = [(g, k) for g, chunks in enumerate(groups) for k in range(len(chunks))]
    for idx, (g, k) in enumerate(jobs):
        start = sum(sizes[g][:k])
        n = sizes[g][k]
        # all but the last backward skip the gradient all-reduce
        quiet = (
            no_sync() if no_sync is not None and idx < len(jobs) - 1 else contextlib.nullcontext()
        )
        with quiet, states[g][k].restore():
            emb = embed(groups[g][k])
            surrogate = (emb * cached[g][start : start + n].to(emb.dtype)).sum()
            backward(surrogate)
    return loss.detach(), len(jobs)


def chunked(seq: Sequence, size: int) -> list:
    """`seq` cut into consecutive pieces of at most `size` items (size <= 0: one piece)."""
    if size <= 0 or size >= len(seq):
        return [seq]
    return [seq[i : i + size] for i in range(0, len(seq), size)]
