from __future__ import annotations

# One short tagged example: a 135M model never writes the tags unprompted, and all-zero
# reward groups carry no learning signal.
R1_SYSTEM_PROMPT = (
    "You are a helpful assistant. You first think about the reasoning process and then give the answer. "
    "The reasoning goes inside <think> </think> tags and the final answer inside <answer> </answer> tags. "
    "Example:\n"
    "User: What is 3 + 4?\n"
    "Assistant: <think> 3 plus 4 equals 7. </think> <answer>7</answer>"
)


def format_prompt(tokenizer, question: str, system_prompt: str = "", prefill: str = "<think>") -> str:
    """Chat-templated prompt text ending inside the assistant turn with `prefill`."""
    messages = [{"role": "system", "content": system_prompt or R1_SYSTEM_PROMPT},
                {"role": "user", "content": question}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + prefill
