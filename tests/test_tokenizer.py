"""The shipped tiny tokenizer behaves like Llama-2's where MiniGPT-v2 depends on it."""

from __future__ import annotations

import pytest

from mgv2.config import resolve_path
from mgv2.tokenizer import (
    ADDED_TOKENS,
    COORD_TOKENS,
    TokenizerError,
    load_tokenizer,
    tiny_corpus,
    train_tiny_tokenizer,
)

TINY_DIR = resolve_path("mgv2:tiny_tokenizer")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_DIR)


def test_loads_with_llama_special_ids(tok):
    assert (tok.unk_token, tok.bos_token, tok.eos_token) == ("<unk>", "<s>", "</s>")
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.convert_ids_to_tokens([3, 258]) == ["<0x00>", "<0xFF>"]  # byte fallback, as in Llama
    assert 1900 <= len(tok) <= 2200


def test_pad_is_one_token(tok):
    assert tok.pad_token == "$$"
    ids = tok("$$", add_special_tokens=False).input_ids
    assert ids == [tok.pad_token_id]
    assert tok.pad_token_id not in (0, 1, 2)


def test_coordinates_and_markup_are_single_ids(tok):
    for t in ADDED_TOKENS:
        ids = tok(t, add_special_tokens=False).input_ids
        assert len(ids) == 1 and ids[0] != tok.unk_token_id, t
    assert len({tok.convert_tokens_to_ids(t) for t in COORD_TOKENS}) == 101
    assert tok("{<12><30><41><77>}", add_special_tokens=False).input_ids[1:5] == [
        tok.convert_tokens_to_ids(f"<{i}>") for i in (12, 30, 41, 77)
    ]


@pytest.mark.parametrize(
    "text",
    [
        "{<12><30><41><77>}",
        "<p>red balloon</p> {<1><2><3><4>}<delim>{<5><6><7><8>}",
        "[INST] <Img><ImageHere></Img> [refer] where is the red ball ? [/INST]",
        "a big red balloon is left of the small box, 12 cups and 305 stars. yes",
        "héllo wörld 漢字 🙂",
        "{<0><0><100><100>}",
    ],
)
def test_round_trip(tok, text):
    ids = tok(text).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids[1:]) == text


def test_uncased_so_benchmark_questions_read_like_training_ones(tok):
    """Training text is lowercased (SPEC §2) but benchmark prompts keep the dataset's spelling
    (SPEC §7): the tiny tokenizer lowercases, so "What is ..." gets the ids of "what is ..."; the
    added tokens keep theirs."""
    ids = tok("[INST] <Img><ImageHere></Img> [vqa] What is left of the Ball? [/INST]", add_special_tokens=False).input_ids
    assert ids == tok("[INST] <Img><ImageHere></Img> [vqa] what is left of the ball? [/INST]", add_special_tokens=False).input_ids
    assert tok.convert_tokens_to_ids("[INST]") in ids and tok.convert_tokens_to_ids("<ImageHere>") in ids
    assert tok.decode(tok("Is the Cup red?", add_special_tokens=False).input_ids) == "is the cup red?"


def test_cased_tokenizer_on_request(tmp_path):
    texts = tiny_corpus(templates=["[vqa] {}"], n=300)
    cased = load_tokenizer(train_tiny_tokenizer(texts, tmp_path / "cased", vocab_size=1024, uncased=False))
    assert cased("What", add_special_tokens=False).input_ids != cased("what", add_special_tokens=False).input_ids


def test_digits_split_individually(tok):
    assert tok.tokenize("2024") == ["▁", "2", "0", "2", "4"]


def test_bos_added_with_special_tokens(tok):
    with_special = tok("a red ball").input_ids
    without = tok("a red ball", add_special_tokens=False).input_ids
    assert with_special == [1] + without
    assert 2 not in with_special
    # the official inference prompt: a literal <s> plus the tokenizer's BOS (SPEC §3)
    assert tok("<s>[INST] <Img>").input_ids[:2] == [1, 1]


def test_split_at_image_placeholder_matches_whole(tok):
    whole = tok("[INST] <Img><ImageHere></Img> [vqa] what color is the cup? [/INST]", add_special_tokens=False)
    before = tok("[INST] <Img>", add_special_tokens=False).input_ids
    after = tok("</Img> [vqa] what color is the cup? [/INST]", add_special_tokens=False).input_ids
    assert whole.input_ids == before + [tok.convert_tokens_to_ids("<ImageHere>")] + after


def test_training_is_deterministic(tmp_path):
    texts = tiny_corpus(templates=["[refer] where is {} ?", "[identify] {}", "[vqa] {}"], n=1500)
    a = train_tiny_tokenizer(texts, tmp_path / "a", vocab_size=1024)
    b = train_tiny_tokenizer(texts, tmp_path / "b", vocab_size=1024)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    t = load_tokenizer(a)
    assert len(t) == 1024 and t.pad_token_id == t.convert_tokens_to_ids("$$")


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(TokenizerError, match="tokenizer.json or tokenizer.model"):
        load_tokenizer(tmp_path)
    with pytest.raises(TokenizerError, match="not a single token"):
        load_tokenizer(TINY_DIR, pad_token="red balloon")
