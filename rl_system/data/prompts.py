from __future__ import annotations

from collections.abc import Sequence

# One short tagged example: a 135M model never writes the tags unprompted, and all-zero
# reward groups carry no learning signal.
R1_SYSTEM_PROMPT = (
    "You are a helpful assistant. You first think about the reasoning process and then give the answer. "
    "The reasoning goes inside <think> </think> tags and the final answer inside <answer> </answer> tags. "
    "Example:\n"
    "User: What is 3 + 4?\n"
    "Assistant: <think> 3 plus 4 equals 7. </think> <answer>7</answer>"
)


def chat_messages(prompt: str | Sequence[dict], system_prompt: str = "") -> list[dict]:
    """The chat a prompt is asked in: a question text becomes system + user; a row's own chat messages
    are kept as they are, `system_prompt` (or the R1 prompt) put first only where they have no system message."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt or R1_SYSTEM_PROMPT})
    return messages


def format_prompt(tokenizer, prompt: str | Sequence[dict], system_prompt: str = "", prefill: str = "<think>") -> str:
    """Chat-templated prompt text (of a question or a row's chat messages) ending inside the assistant
    turn with `prefill`; the template is applied here, once."""
    text = tokenizer.apply_chat_template(chat_messages(prompt, system_prompt), tokenize=False,
                                         add_generation_prompt=True)
    return text + prefill
