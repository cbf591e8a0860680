"""Log-probabilities computed with a plain forward (no trl code): the independent route that the
trainer tests of several modules check trl's numbers against. (Their micro dataset and tokenizer
are the ``ds`` and ``tok`` fixtures of conftest.py.)"""

import torch


@torch.no_grad()
def completion_token_logps(model, tok, prompt: str, completion: str) -> torch.Tensor:
    """log p of each token of completion + EOS given the prompt (eval mode, a plain forward)."""
    model.eval()
    n = len(tok(prompt)["input_ids"])
    ids = torch.tensor([tok(prompt + completion + tok.eos_token)["input_ids"]])
    assert ids[0, :n].tolist() == tok(prompt)["input_ids"]  # the prompt's tokens are a prefix
    logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return logp[n - 1:]


def completion_logp(model, tok, prompt: str, completion: str) -> float:
    """Sum of log p(completion + EOS | prompt)."""
    return completion_token_logps(model, tok, prompt, completion).sum().item()
