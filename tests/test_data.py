import json
import random

from rl_system.config import DataConfig
from rl_system.data import Problem, PromptSampler, format_prompt, load_splits


def test_reasoning_gym_splits_are_deterministic_and_disjoint():
    cfg = DataConfig(num_train=60, num_eval=20, seed=3)
    train, held_out = load_splits(cfg)
    train2, held_out2 = load_splits(cfg)
    assert [p.question for p in train] == [p.question for p in train2]
    assert [p.question for p in held_out] == [p.question for p in held_out2]
    assert len(held_out) == 20 and len(train) == 60
    assert not {p.question for p in train} & {p.question for p in held_out}
    assert held_out[0].columns["task"] == "chain_sum"
    other_seed = load_splits(DataConfig(num_train=60, num_eval=20, seed=4))[1]
    assert [p.question for p in other_seed] != [p.question for p in held_out]


def test_local_file_with_column_mapping(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"q": f"What is {i} + 1?", "a": str(i + 1), "level": i % 3} for i in range(12)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    train, held_out = load_splits(DataConfig(source="file", path=str(path), prompt_column="q", answer_column="a",
                                             num_eval=2, num_train=100))
    assert len(train) == 10 and len(held_out) == 2
    problem = train[0]
    assert str(int(problem.question.split()[2]) + 1) == problem.answer
    assert "level" in problem.columns


def test_sampler_walks_epochs_and_resumes_from_cursor():
    problems, _ = load_splits(DataConfig(num_train=10, num_eval=5))
    sampler = PromptSampler(problems, seed=1)
    first = sampler.next_batch(10)
    assert sorted(p.problem_id for p in first) == list(range(10))  # one epoch = every problem once
    nxt = sampler.next_batch(3)
    resumed = PromptSampler(problems, seed=1, cursor=10).next_batch(3)
    assert [p.problem_id for p in nxt] == [p.problem_id for p in resumed]


def drawn_one_shuffle_per_prompt(problems: list[Problem], seed: int, cursor: int, n: int) -> list[int]:
    """The problem ids PromptSampler drew before it kept each epoch's order: a shuffle per prompt."""
    ids = []
    for position in range(cursor, cursor + n):
        epoch, pos = divmod(position, len(problems))
        order = list(range(len(problems)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        ids.append(problems[order[pos]].problem_id)
    return ids


def test_sampler_shuffles_once_per_epoch_and_keeps_its_order(monkeypatch):
    shuffled = []
    shuffle = random.Random.shuffle
    monkeypatch.setattr(random.Random, "shuffle", lambda self, x: (shuffled.append(len(x)), shuffle(self, x))[1])
    big = [Problem(i, f"q{i}", "0") for i in range(100_000)]
    sampler = PromptSampler(big, seed=3, cursor=99_968)
    straddling, after = sampler.next_batch(64), sampler.next_batch(64)  # the end of epoch 0, into epoch 1
    assert shuffled == [100_000, 100_000]  # one permutation per epoch (it was one per prompt: 128)
    assert [p.problem_id for p in straddling + after] == drawn_one_shuffle_per_prompt(big, 3, 99_968, 128)

    small = [Problem(i, f"q{i}", "0") for i in range(7)]
    for seed, cursor in ((0, 0), (5, 4), (11, 13)):  # resumed mid-epoch, too
        sampler = PromptSampler(small, seed, cursor)
        drawn = [p.problem_id for size in (1, 3, 7, 10, 2, 64, 5, 200) for p in sampler.next_batch(size)]
        assert drawn == drawn_one_shuffle_per_prompt(small, seed, cursor, len(drawn))  # 292 draws, 42 epochs


def test_prompt_asks_for_tags_and_prefills_think(tiny_model_dir):
    from rl_system.models import load_tokenizer

    text = format_prompt(load_tokenizer(tiny_model_dir), "What is 1 + 2?")
    assert "<answer>" in text and text.endswith("<|im_start|>assistant\n<think>")


def test_general_prompts_join_the_train_split_only():
    train, held_out = load_splits(DataConfig(num_train=20, num_eval=5, general_prompts=8))
    general = [p for p in train if p.columns.get("kind") == "general"]
    assert len(general) == 8 and len(train) == 28
    assert sum(p.columns["harmful"] for p in general) == 2  # a quarter: asks whose right answer is a refusal
    assert all(p.columns.get("kind") != "general" for p in held_out)
    assert len({p.problem_id for p in train}) == len(train)


def test_every_valid_json_lines_file_is_read(tmp_path):
    """JSON Lines splits at \\n only: U+2028, U+2029 and NEL, where str.splitlines() also breaks, are text
    inside a string (JSON writes them raw); CRLF line ends are allowed."""
    from rl_system.data.sources import read_table

    breakers = "\u2028\u2029\x85"
    rows = [{"question": f"What{c}is {i} + 1?", "answer": str(i + 1)} for i, c in enumerate(breakers)]
    path = tmp_path / "qa.jsonl"
    path.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n", encoding="utf-8",
                    newline="")
    table = read_table(path, "data.path")
    assert table.rows == rows and table.lines == list(range(1, len(rows) + 1))
