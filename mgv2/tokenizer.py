"""Tokenizers: load a local one with the official pad token, or train the tiny Llama-like one.

:func:`load_tokenizer` reads a tokenizer folder (Llama-2-7b-chat-hf, a converted SmolLM2, the
shipped tiny tokenizer ``mgv2:tiny_tokenizer``) from disk only and sets the pad token the way
the official code does (``tokenizer.pad_token = "$$"``, id 3997 in Llama-2, SPEC §1/§3).

:func:`train_tiny_tokenizer` builds a small tokenizer that behaves like Llama-2's where it
matters to MiniGPT-v2: ``<unk>``/``<s>``/``</s>`` are ids 0/1/2, SentencePiece-style ``▁``
word boundaries, digits one per token, byte fallback (ids 3..258 are ``<0x00>``..``<0xFF>``
as in Llama), BOS added with special tokens on, and ``$$`` one token.  Unlike Llama-2 (which
splits them into pieces) the prompt markers, task tags and the coordinates ``<0>``..``<100>``
are single-id *non-special* added tokens, so a tiny model sees short sequences while decoding
(even with ``skip_special_tokens=True``) still gives the plain text back.  ``$$`` is a BPE
piece (id 1932 in the shipped tokenizer) that transformers also registers as the special pad
token, so ``decode(..., skip_special_tokens=True)`` drops it, as it does for Llama-2 once its
pad is ``$$``.  Rebuild the shipped folder with ``python -m mgv2.tokenizer`` (deterministic;
the corpus takes the instruction templates from ``tasks.TASKS``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from mgv2.errors import MGV2Error
from mgv2.io import atomic_dir

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
PAD = "$$"
BYTE_TOKENS = tuple(f"<0x{i:02X}>" for i in range(256))
COORD_TOKENS = tuple(f"<{i}>" for i in range(101))
MARKUP_TOKENS = ("<p>", "</p>", "<delim>", "<Img>", "</Img>", "<ImageHere>", "[INST]", "[/INST]")
TASK_TAGS = ("[refer]", "[identify]", "[grounding]", "[detection]", "[vqa]", "[caption]")
ADDED_TOKENS = COORD_TOKENS + MARKUP_TOKENS + TASK_TAGS
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
_ADDED_RE = re.compile(
    "(" + "|".join(re.escape(t) for t in sorted((UNK, BOS, EOS, *ADDED_TOKENS), key=len, reverse=True)) + ")"
)


class TokenizerError(MGV2Error):
    """A tokenizer folder is missing or unusable, or the pad token does not fit its vocabulary."""


# ---------------------------------------------------------------------------------------------
# loading


def load_tokenizer(path: Path, pad_token: str = PAD):
    """Load the tokenizer in the local folder ``path`` (nothing is downloaded) and set its pad
    token to ``pad_token``, which must be one existing token of the vocabulary."""
    from transformers import AutoTokenizer

    path = Path(path).expanduser()
    if not path.is_dir():
        raise TokenizerError(
            f"tokenizer folder not found: {path}; point llm.tokenizer (or llm.path) at a local folder "
            f"holding {' or '.join(TOKENIZER_FILES)} (e.g. Llama-2-7b-chat-hf, or mgv2:tiny_tokenizer)"
        )
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        present = sorted(p.name for p in path.iterdir())[:12]
        raise TokenizerError(
            f"{path} has no tokenizer: expected {' or '.join(TOKENIZER_FILES)} (found {present}); "
            "convert a GGUF with mgv2.convert.convert_gguf or point at a Hugging Face model folder"
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many kinds here; name the folder
        raise TokenizerError(f"could not load the tokenizer in {path}: {type(e).__name__}: {e}") from e

    pad_id = tok.convert_tokens_to_ids(pad_token)
    unk_id = tok.unk_token_id
    if pad_id is None or (pad_id == unk_id and pad_token != tok.unk_token):
        raise TokenizerError(
            f"pad token {pad_token!r} is not a single token of the tokenizer in {path}; choose one that is, "
            f"e.g. {_pad_suggestions(tok)}"
        )
    tok.pad_token = pad_token
    if tok.pad_token_id != pad_id:  # defensive: transformers must not have re-added it elsewhere
        raise TokenizerError(f"setting pad token {pad_token!r} gave id {tok.pad_token_id}, expected {pad_id}")
    return tok


def coordinate_token_ids(tokenizer) -> list[int]:
    """``ids[v]`` = the token id of ``<v>`` for v in 0..100 (the coordinate tokens of box text)."""
    return [int(i) for i in tokenizer.convert_tokens_to_ids(list(COORD_TOKENS))]


def _pad_suggestions(tok) -> list[str]:
    vocab = tok.get_vocab()
    picks = [t for t in ("$$", "<unk>", "<|endoftext|>", "<pad>", "<|im_end|>", tok.eos_token) if t in vocab]
    return list(dict.fromkeys(picks))[:4]


# ---------------------------------------------------------------------------------------------
# training the tiny tokenizer


def _backend(vocab: dict[str, int] | None = None, merges: list | None = None, prepend: str = "first"):
    """The tokenizers pipeline shared by training and the final tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    model = models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend, split=True),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    # Llama-2's own decoder chain: "▁" -> " ", bytes -> text, one string, drop the first space
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return tok


def train_tiny_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int = 2048, uncased: bool = True) -> Path:
    """Train a Llama-like BPE tokenizer on ``texts`` and save it as a transformers folder.

    ``uncased`` (default): the saved tokenizer lowercases text before splitting it (the added
    tokens keep their case: ``[INST]``, ``<Img>``).  The training text processor lowercases every
    question, expression and caption (SPEC §2), but the benchmark prompts insert the question as
    the dataset spells it ("What is left of the ball?", SPEC §7).  Llama-2 learnt in pretraining
    that "What" and "what" mean the same; an LLM trained from scratch on lowercased text never sees
    "▁What" next to a question and reads such a prompt without its first word (docs/demo_model.md,
    nineteenth session).  The BPE pieces are learnt as before (cased), so the ids do not change;
    pieces with capitals stay in the vocabulary, unreachable.

    ``vocab_size`` is the total size (``len(tokenizer)``), added tokens included.  Layout of the
    ids: 0 ``<unk>``, 1 ``<s>``, 2 ``</s>``, 3..258 byte-fallback tokens, then the learnt BPE
    pieces (``$$`` among them), then the added tokens (coordinates, markup, task tags).
    Deterministic for a given ``texts``.  Written into a temporary folder and renamed.
    """
    from tokenizers import AddedToken, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts)
    n_fixed = 3 + len(BYTE_TOKENS)
    bpe_size = vocab_size - len(ADDED_TOKENS)
    if bpe_size <= n_fixed + 64:
        raise TokenizerError(f"vocab_size {vocab_size} is too small; use at least {n_fixed + len(ADDED_TOKENS) + 128}")

    # 1. learn BPE pieces.  The trainer does not cut out added tokens, so the texts are split
    # at them here, and the "▁" that Metaspace(prepend_scheme="first") puts before a text's
    # first fragment is added by hand (later fragments follow an added token: no "▁").
    fragments: list[str] = []
    for text in texts:
        for i, frag in enumerate(_ADDED_RE.split(text)):
            if frag and not _ADDED_RE.fullmatch(frag):
                fragments.append(frag if i or frag.startswith(" ") else " " + frag)
    trainer_tok = _backend(prepend="never")
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_size - len(BYTE_TOKENS),  # the trainer's vocab: 3 specials + alphabet + merges
        special_tokens=[UNK, BOS, EOS],
        min_frequency=2,
        show_progress=False,
    )
    trainer_tok.train_from_iterator(fragments, trainer=trainer)
    learnt = json.loads(trainer_tok.to_str())["model"]
    learnt_vocab: dict[str, int] = learnt["vocab"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learnt["merges"]]

    # 2. rebuild with Llama's id layout: specials, bytes, the learnt pieces in their order, then
    # the added tokens (coordinates, markup, task tags).
    pieces = [t for t, _ in sorted(learnt_vocab.items(), key=lambda kv: kv[1]) if t not in (UNK, BOS, EOS)]
    if PAD not in learnt_vocab:  # make "$$" a piece reachable from text, like Llama-2's id 3997
        if "$" not in learnt_vocab:
            raise TokenizerError("the training texts never contain '$'; the pad token '$$' needs it")
        if merges and pieces[-1] == "".join(merges[-1]):  # free one slot: drop the last merge
            pieces.pop()
            merges.pop()
        pieces.append(PAD)
        merges.append(("$", "$"))
    vocab = {UNK: 0, BOS: 1, EOS: 2}
    for t in BYTE_TOKENS + tuple(pieces):
        vocab.setdefault(t, len(vocab))

    tok = _backend(vocab, merges)
    if uncased:
        tok.normalizer = normalizers.Lowercase()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in (UNK, BOS, EOS)])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in ADDED_TOKENS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, 1)]
    )

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        fast.save_pretrained(str(tmp))
        # name the class every transformers release knows (v5 calls it TokenizersBackend and
        # keeps PreTrainedTokenizerFast as its alias; v4 knows only the latter)
        cfg_path = tmp / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return out_dir


# ---------------------------------------------------------------------------------------------
# the shipped tiny tokenizer (mgv2/assets/tiny_tokenizer)

TINY_TOKENIZER_DIR = Path(__file__).resolve().parent / "assets" / "tiny_tokenizer"


def _words(text: str) -> list[str]:
    return text.split()


_OBJECTS = _words(
    "balloon ball box cup star kite apple banana orange car bus truck bike boat plane train dog cat "
    "bird horse cow sheep bear zebra giraffe elephant person man woman boy girl child baby chair "
    "table bed sofa couch lamp clock vase book bottle glass plate bowl spoon fork knife pizza cake "
    "donut sandwich hat shirt shoe bag umbrella phone laptop tv screen window door tree flower plant "
    "grass sky cloud sun moon road street sign light pole fence wall house building bridge river lake "
    "sea beach sand snow hill mountain rock stone toy block cube sphere cylinder cone ring triangle "
    "square circle heart shape frisbee skateboard surfboard kite racket bench sink oven fridge toilet "
    "keyboard mouse remote scissors teddy"
)
_COLOURS = _words(
    "red green blue yellow orange purple pink brown black white gray grey gold silver cyan"
)
_SIZES = _words(
    "big small large tiny huge little tall short long wide thin round"
)
_MATERIALS = _words(
    "wooden metal plastic glass paper striped dotted shiny dark bright"
)
_RELATIONS = (
    "left of", "right of", "above", "below", "under", "over", "on top of", "next to", "behind", "in front of",
    "inside", "near", "far from", "beside", "between", "touching", "on", "in", "at",
)
_SUPERLATIVES = ("the biggest", "the smallest", "the leftmost", "the rightmost", "the top", "the bottom",
                 "the middle", "the closest", "the farthest", "the tallest", "the only")
_VERBS = _words(
    "is are was were has have holds holding sits sitting stands standing lies lying runs running "
    "walks walking flies flying plays playing eats eating looks looking rides riding carries carrying "
    "throws throwing catches jumps jumping floats floating hangs hanging leans leaning wears wearing "
    "points pointing shows showing contains containing covers covered painted filled made parked "
    "placed stacked surrounded"
)
_CHAT = (
    "Hello! How can I help you today?", "Sure, here is a short description of the picture.",
    "I can see {n} {o}s in this image.", "The {o} appears to be {c} and {s}.",
    "There is no {o} in the image.", "It looks like a {m} {o} {v} {r} a {o2}.",
    "What do you think the {o} is used for?", "Thank you, that is very helpful.",
    "The answer is {n}.", "I am not sure, but it might be a {o}.",
)
_NUMBER_WORDS = _words(
    "zero one two three four five six seven eight nine ten eleven twelve"
)
_ANSWERS = ("yes", "no", "true", "false", "Yes", "No", "True", "False", "unanswerable", "none", "maybe")
_QUESTIONS = (
    "what color is the {o}?", "how many {o}s are there?", "is there a {c} {o}?", "what is {r} the {o}?",
    "where is the {o}?", "which {o} is {s}?", "is the {o} {r} the {o2}?", "what shape is the {o}?",
    "are there more {o}s than {o2}s?", "what is the {o} made of?", "who is holding the {o}?",
    "what is the man doing?", "what is in the picture?", "is it daytime?", "what time is it?",
    "why is the {o} {c}?", "does the {o} have a {o2}?", "can you see a {o}?",
)
_CAPTIONS = (
    "a {c} {o} {r} a {s} {o2}.", "there is a {s} {c} {o} {r} the {o2}.", "{n} {o}s and a {c} {o2}.",
    "a photo of a {m} {o}.", "the {o} is {r} the {c} {o2}.", "a {s} {o} on a {c} background.",
    "an image showing {n} {c} {o}s.", "A {c} {o} sits {r} a {m} {o2}.", "Two {o}s are next to each other.",
)
_INSTRUCTIONS = (
    "Briefly describe this image.", "Provide a concise depiction of this image.",
    "Present a short description of this image.", "Summarize this image in a few words.",
    "A short image caption:", "A short image description:", "A photo of", "An image that shows",
    "Write a short description for the image.", "Write a description for the photo.",
    "Provide a description of what is presented in the photo.", "Briefly summarize the content of the photo.",
    "Can you briefly explain what you see in the image?",
    "Could you use a few words to describe what you perceive in the photo?",
    "Please provide a short depiction of the picture.", "Using language, provide a short account of the image.",
    "Use a few words to illustrate what is happening in the picture.",
    "Based on the image, respond to this question with a short answer:",
    "Based on the image, is this statement true or false?",
    (
        "The question is '{q}' Based on the image, answer the question with a single word or phrase. and reply "
        "'unanswerable' when the provided information is insufficient"
    ),
    "please describe this image in details", "describe this image as detailed as possible",
    "summarize this image in details", "give a thorough description of what you see in this image",
    "describe this image in detail", "what is this", "You are a helpful assistant.",
)


def tiny_corpus(templates: Iterable[str] | None = None, n: int = 12000, seed: int = 0) -> list[str]:
    """Deterministic synthetic text for the tiny tokenizer: everyday objects, colours, sizes,
    spatial relations, numbers, yes/no/true/false, questions, captions, caption instructions and
    the task instruction templates (``templates``; default: every template of ``tasks.TASKS``)."""
    import random

    if templates is None:
        try:
            from tasks import TASKS
        except ImportError as e:
            raise TokenizerError(
                "tiny_corpus needs the task templates: tasks.TASKS is not importable "
                f"({e}); pass templates=[...] explicitly"
            ) from e
        templates = [t for name in sorted(TASKS) for t in TASKS[name].templates]
    templates = list(templates)
    if not templates:
        raise TokenizerError("tiny_corpus: templates is empty")
    rng = random.Random(seed)

    def box() -> str:
        x1, y1 = rng.randint(0, 90), rng.randint(0, 90)
        return f"{{<{x1}><{y1}><{rng.randint(x1, 100)}><{rng.randint(y1, 100)}>}}"

    def pick() -> dict[str, str]:
        return {
            "o": rng.choice(_OBJECTS), "o2": rng.choice(_OBJECTS), "c": rng.choice(_COLOURS),
            "s": rng.choice(_SIZES), "m": rng.choice(_MATERIALS), "r": rng.choice(_RELATIONS),
            "n": rng.choice(_NUMBER_WORDS + [str(rng.randint(0, 20))]), "v": rng.choice(_VERBS),
        }

    def phrase() -> str:
        f = pick()
        forms = (
            "{c} {o}", "the {s} {o}", "{s} {c} {o}", "{o} {r} the {o2}", "the {c} {o} {r} the {o2}",
            "{m} {o}", "the {o} with the {c} {o2}",
        )
        p = rng.choice(forms).format(**f)
        return f"{rng.choice(_SUPERLATIVES)} {f['o']}" if rng.random() < 0.15 else p

    out: list[str] = []
    out += list(_OBJECTS) + list(_COLOURS) + list(_SIZES) + list(_RELATIONS) + list(_SUPERLATIVES)
    out += list(_NUMBER_WORDS) + list(_VERBS) + list(_ANSWERS) + list(_INSTRUCTIONS) + templates
    for _ in range(n):
        f = pick()
        kind = rng.randrange(10)
        if kind == 0:
            out.append(rng.choice(_QUESTIONS).format(**f))
        elif kind == 1:
            out.append(rng.choice(_CAPTIONS).format(**f))
        elif kind == 2:  # a filled task instruction in the chat template, with its answer
            t = rng.choice(templates)
            arg = box() if "[identify]" in t else phrase()
            instr = t.replace("{}", arg, 1) if "{}" in t else t
            instr = instr.replace("{phrase}", phrase()).replace("{caption}", rng.choice(_CAPTIONS).format(**f))
            instr = instr.replace("{sent}", phrase()).replace("{q}", rng.choice(_QUESTIONS).format(**f))
            out.append(f"[INST] <Img><ImageHere></Img> {instr} [/INST] {box() if '[refer]' in t else phrase()}")
        elif kind == 3:  # grounded caption
            out.append(
                f"<p>{phrase()}</p> {box()} {rng.choice(_RELATIONS)} <p>{phrase()}</p> {box()}<delim>{box()}."
            )
        elif kind == 4:
            out.append(f"{rng.choice(_QUESTIONS).format(**f)} {rng.choice(_ANSWERS)}")
        elif kind == 5:  # numbers, counts, prices
            a, b = rng.randint(0, 1000), rng.randint(0, 99)
            out.append(f"there are {a} {f['o']}s, {b} of them {f['c']}; it costs ${b}.{a % 100:02d} or $${a}")
        elif kind == 6:
            out.append(rng.choice(_INSTRUCTIONS).format(q=rng.choice(_QUESTIONS).format(**f)))
        elif kind == 7:
            out.append(f"The {f['o']} is {f['r']} the {f['o2']}. {rng.choice(_ANSWERS)}, it is {f['c']}.")
        elif kind == 8:
            out.append(f"{phrase()}; {phrase()} {f['v']} {phrase()}, {rng.choice(_CHAT).format(**pick())}")
        else:
            out.append(f"[INST] {rng.choice(_QUESTIONS).format(**f)} [/INST] {rng.choice(_CAPTIONS).format(**f)}</s>")
    return out


def build_tiny_tokenizer(out_dir: Path = TINY_TOKENIZER_DIR, templates: Iterable[str] | None = None,
                         vocab_size: int = 2048) -> Path:
    """(Re)build the shipped tiny tokenizer from :func:`tiny_corpus`."""
    return train_tiny_tokenizer(tiny_corpus(templates), out_dir, vocab_size=vocab_size)


if __name__ == "__main__":  # python -m mgv2.tokenizer [OUT_DIR]
    import sys

    print(build_tiny_tokenizer(Path(sys.argv[1]) if len(sys.argv) > 1 else TINY_TOKENIZER_DIR))
