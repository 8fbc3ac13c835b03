"""Rule rewards with TRL's signature: f(prompts, completions, **columns) -> list[float].

`completions` are the whole assistant turns, the prefilled `<think>` included.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import unicodedata

STRICT_FORMAT = re.compile(r"^\s*<think>(?:(?!</?think>|</?answer>).)*</think>\s*<answer>((?:(?!</?think>|</?answer>).)*)</answer>\s*$",
                           re.DOTALL)
# A block's text holds no further <answer>: in `<answer><answer>7</answer></answer>` it is the inner "7".
ANSWER = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL)
TAG = re.compile(r"</?(?:think|answer)>")
# Longer answers score 0 without grading: no reference is that long, and math-verify's parser would
# spend its whole timeout (and log the text) on a megabyte of output.
MAX_ANSWER_CHARS = 1000


def extract_answer(completion: str) -> str | None:
    """The text of the last <answer>...</answer> block (the innermost, when blocks are nested),
    stripped; None when there is none (an unclosed <answer> is none)."""
    found = ANSWER.findall(completion)
    return found[-1].strip() if found else None


def format_reward(prompts, completions, **columns) -> list[float]:
    """1.0 when the turn is exactly <think>...</think> <answer>...</answer>, one of each, else 0.0."""
    return [1.0 if STRICT_FORMAT.match(c) else 0.0 for c in completions]


def accuracy_reward(prompts, completions, answer, task=None, metadata=None, **columns) -> list[float]:
    """Grades the <answer> text: reasoning-gym's own grader for gym tasks, math-verify otherwise."""
    scores = []
    for i, completion in enumerate(completions):
        given = extract_answer(completion)
        if given is None or not given or len(given) > max(MAX_ANSWER_CHARS, 4 * len(str(answer[i]))):
            scores.append(0.0)
        elif task is not None and task[i]:
            scores.append(_gym_score(task[i], given, answer[i], metadata[i] if metadata else None))
        else:
            scores.append(_math_verify_score(given, answer[i]))
    return scores


def _gym_score(task: str, given: str, gold: str, metadata: str | dict | None) -> float:
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))
    import reasoning_gym

    meta = json.loads(metadata) if isinstance(metadata, str) else (metadata or {})
    return float(reasoning_gym.get_score_answer_fn(task)(given, {"answer": gold, "metadata": meta}))


def _math_verify_score(given: str, gold: str) -> float:
    from math_verify import parse, verify

    # math-verify wants delimiters to find LaTeX; a bare answer is wrapped so "1/2" parses.
    def parsed(text: str):
        return parse(text if "$" in text or "\\" in text else f"${text}$")

    return 1.0 if verify(parsed(gold), parsed(given)) else 0.0


# Unicode script names (the start of unicodedata.name) that count as writing in a language.
LANGUAGE_SCRIPTS = {
    "en": ("LATIN",), "fr": ("LATIN",), "de": ("LATIN",), "es": ("LATIN",), "it": ("LATIN",), "pt": ("LATIN",),
    "ru": ("CYRILLIC",), "zh": ("CJK",), "ja": ("CJK", "HIRAGANA", "KATAKANA"), "ko": ("HANGUL",),
    "ar": ("ARABIC",), "hi": ("DEVANAGARI",),
}


def language_consistency_reward(prompts, completions, language: str = "en", **columns) -> list[float]:
    """DeepSeek-R1's language-consistency reward: the share of the chain of thought's words that are
    written in the target language's script (digits and symbols are neutral). The chain of thought is
    the text after <think> up to </think> (or the end when it is not closed; the whole completion when
    there is no <think>), tags removed. No words: 0.0."""
    if language not in LANGUAGE_SCRIPTS:
        raise ValueError(f"language_consistency: unknown language '{language}' (known: {sorted(LANGUAGE_SCRIPTS)})")
    scripts = LANGUAGE_SCRIPTS[language]

    def in_script(word: str) -> bool:
        return all(unicodedata.name(ch, "").startswith(scripts) for ch in word if ch.isalpha())

    scores = []
    for completion in completions:
        found = re.search(r"<think>(.*?)(?:</think>|$)", completion, re.DOTALL)
        text = TAG.sub(" ", found.group(1) if found else completion)
        words = [w for w in re.findall(r"\w+", text) if any(ch.isalpha() for ch in w)]
        scores.append(sum(in_script(w) for w in words) / len(words) if words else 0.0)
    return scores
