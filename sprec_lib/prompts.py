"""Samples -> prompt and completion text, in the paper's wording.

The prompt is the Alpaca template of the paper's generation and evaluation code
(``train/data_generate.py``, ``eval/inference.py``), verbatim, two trailing spaces included. The
``instruction`` and ``input`` inside it come from the dataset's :class:`~sprec_lib.data.Wording`
and the sample's item ids; the completion is ``"<title>"`` plus the wording's tail.

Where the public code differs (recorded in the book's reproducibility notes):

* ``train/sft.py`` formats its training text with an f-string indented inside the function, so
  the SFT text has 16 spaces before every ``### ...`` line, unlike the prompt used at generation.
  We use one template for training and generation (a train/test mismatch is not worth reproducing).
* ``train/data_generate.py`` builds DPO prompts as ``instruction + input`` with no template at
  all. We use the template; ``template="raw"`` reproduces the code's DPO prompt.
"""

from __future__ import annotations

from .data import Catalogue, Sample, Wording

ALPACA = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.  \n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)

TEMPLATES = {"alpaca": ALPACA, "raw": "{instruction}{input}"}


def input_text(history: tuple[int, ...], catalogue: Catalogue, wording: Wording) -> str:
    titles = ", ".join(f'"{catalogue.titles[i]}"' for i in history)
    return f"{wording.input_head}{titles}{wording.input_tail}"


def prompt(sample: Sample, catalogue: Catalogue, wording: Wording, template: str = "alpaca") -> str:
    return TEMPLATES[template].format(instruction=wording.instruction, input=input_text(sample.history, catalogue, wording))


def completion(title: str, wording: Wording) -> str:
    """The text the model should write for ``title``: ``"<title>"`` and the wording's tail."""
    return f'"{title}"{wording.output_tail}'


def target_completion(sample: Sample, catalogue: Catalogue, wording: Wording) -> str:
    title = sample.target_title if sample.target is None else catalogue.titles[sample.target]
    return completion(title, wording)


def extract_title(generated: str) -> str | None:
    """The paper's parsing of a generation: text after the first ``"`` up to the next ``"`` or the end.

    Returns None when the generation holds no ``"`` at all (an unparseable generation).
    """
    start = generated.find('"')
    if start < 0:
        return None
    end = generated.find('"', start + 1)
    return generated[start + 1:] if end < 0 else generated[start + 1:end]
