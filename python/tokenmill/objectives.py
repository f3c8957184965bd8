"""Every pretraining objective tokenmill makes data for and trains, declared once.

An :class:`Objective` says what an objective needs and makes: its options
(a frozen dataclass whose fields carry type, default, help and domain), the
special tokens it looks up, the columns the `corrupt` stage writes, whether
rows keep their length, the model family that trains on it and that
family's decoder start, and how its corruptor is built. The corrupt stage,
the collators, `tokenmill train`, the CLI's options and the README's
option tables all read this table, so a fact written here is written
nowhere else; :func:`objective` refuses an unknown name everywhere.

Option defaults are also those of the Rust options structs (their
`Default`); `tests/test_objectives.py` checks they agree.
"""

# No `from __future__ import annotations` here: the options dataclasses'
# field types stay real types, which the CLI reads to build its flags.
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tokenmill import _core
from tokenmill._core import ConfigError, Corruptor, Tokenizer, TokenizerError, Vocab
from tokenmill.options import flag_of, option, shown_default, shown_flag
from tokenmill.tokenizer import (
    EOS_CANDIDATES,
    MASK_CANDIDATES,
    SENTENCE_END_CANDIDATES,
    UL2_MODE_TOKENS,
    require_token,
    sentinel_ids,
)

#: Model families, each one of `tokenmill.train.models.FAMILIES`.
FAMILIES = ("decoder", "encoder", "encoder-decoder", "dual-encoder")


# Options several modes take, declared once each.
def _mask_token_option() -> Any:
    return option(None, "the mask token", shown="<mask>")


def _sentinels_option() -> Any:
    return option(
        None,
        "count N sentinels down from the vocabulary's top instead of <extra_id_*>",
        shown="<extra_id_*>",
    )


def _eos_option() -> Any:
    return option(True, "end inputs and targets with EOS (prefix: encoder-decoder layout)")


def _eos_token_option() -> Any:
    return option(None, "the EOS token", shown="</s>")


@dataclass(frozen=True)
class MlmOptions:
    probability: float = option(0.15, "share of tokens chosen", domain="[0, 1]")
    mask_rate: float = option(0.8, "share of chosen tokens masked", domain="[0, 1]")
    random_rate: float = option(
        0.1, "share of chosen tokens made random", domain="[0, 1 - mask rate]"
    )
    whole_word: bool = option(False, "choose whole words")
    span: bool = option(False, "choose SpanBERT spans of words")
    span_p: float = option(0.2, "geometric p of span lengths (with span)", domain="(0, 1]")
    span_max: int = option(10, "longest span, in words (with span)", domain=">= 1")
    max_predictions: int | None = option(
        None,
        "at most this many chosen tokens per row (BERT's max_predictions_per_seq)",
        domain=">= 1",
        shown="no cap",
    )
    mask_token: str | None = _mask_token_option()


@dataclass(frozen=True)
class SpanOptions:
    noise_density: float = option(0.15, "share of tokens in spans", domain="[0, 1]")
    mean_span: float = option(3.0, "mean span length", domain=">= 1")
    sentinels_from_top: int | None = _sentinels_option()
    eos: bool = _eos_option()
    eos_token: str | None = _eos_token_option()


@dataclass(frozen=True)
class BartOptions:
    mask_ratio: float = option(0.3, "share of words masked", domain="[0, 1]")
    random_ratio: float = option(0.1, "share of masks made random", domain="[0, 1]")
    insert_ratio: float = option(0.0, "inserted noise tokens, per masked token", domain="[0, 1]")
    rotate_ratio: float = option(0.0, "probability of rotating a row", domain="[0, 1]")
    permute_sentence_ratio: float = option(1.0, "share of sentences permuted", domain="[0, 1]")
    delete_ratio: float = option(0.0, "share of tokens deleted", domain="[0, 1]")
    poisson_lambda: float = option(3.5, "mean infilling span length", domain="(0, 100]")
    mask_length: str = option(
        "span-poisson", "what one mask covers", choices=("subword", "word", "span-poisson")
    )
    replace_length: int = option(
        1, "-1 a mask per token, 0 delete spans, 1 a mask per span", domain="-1, 0 or 1"
    )
    sentence_ends: tuple[str, ...] | None = option(
        None, "a token ending a sentence (repeatable)", flag="--sentence-end", shown=". ! ?"
    )
    mask_token: str | None = _mask_token_option()


@dataclass(frozen=True)
class PrefixOptions:
    ratio: float | None = option(
        None, "prefix share of each row", domain="[0, 1]", shown="uniform split"
    )
    layout: str = option(
        "decoder",
        "one sequence with prefix_lens, or inputs and targets",
        choices=("decoder", "encoder-decoder"),
    )
    eos: bool = _eos_option()
    eos_token: str | None = _eos_token_option()


@dataclass(frozen=True)
class Ul2Options:
    sentinels_from_top: int | None = _sentinels_option()
    eos: bool = _eos_option()
    eos_token: str | None = _eos_token_option()


@dataclass(frozen=True)
class Layout:
    """What an objective's rows look like and what trains on them."""

    family: str
    #: The decoder's first input: "pad" (T5), "eos" (BART), None without a decoder.
    decoder_start: str | None
    #: Columns the `corrupt` stage writes after input_ids and labels.
    columns: tuple[str, ...] = ()
    #: Rows keep their length, so packed rows keep seq_lens and positions.
    keeps_length: bool = False
    #: The targets are the text itself, so bits per byte means something.
    text_targets: bool = False
    #: Positions the model gets beyond the data's longest row.
    extra_positions: int = 0


Builder = Callable[[Tokenizer, Any], tuple[Corruptor, dict[str, Any]]]


@dataclass(frozen=True)
class Objective:
    name: str
    summary: str
    #: The rows' layout, or one per value of `layout_option`.
    layouts: Mapping[str, Layout]
    #: The options of `corrupt --mode NAME` (None: no corrupt mode).
    options: type | None = None
    #: Builds the corruptor from a tokenizer and an options instance.
    build: Builder | None = None
    #: The option that picks the layout (prefix's `layout`).
    layout_option: str | None = None
    #: The special tokens it looks up, by what they are.
    special_tokens: tuple[str, ...] = ()
    #: The row length that corrupts into `--input-length` inputs (None: that length).
    raw_length: Callable[[Mapping[str, Any], int], int] | None = None
    #: (density, mean span) of each span denoiser, for counting sentinels.
    span_settings: Callable[[Mapping[str, Any]], list[tuple[float, float]]] | None = None
    #: The stages whose output `tokenmill train` trains it on; the first
    #: says how that data is checked and batched.
    reads: tuple[str, ...] = ("corrupt",)

    @property
    def corrupts(self) -> bool:
        return self.options is not None

    def layout(self, options: Mapping[str, Any] | None = None) -> Layout:
        """The layout these (resolved) options give."""
        if self.layout_option is None:
            return self.layouts["default"]
        value = (options or {}).get(self.layout_option) or self.defaults()[self.layout_option]
        return self.layouts[value]

    def defaults(self) -> dict[str, Any]:
        """Each option's default."""
        if self.options is None:
            return {}
        return {f.name: f.default for f in dataclasses.fields(self.options)}

    def parse(self, options: Mapping[str, Any]) -> Any:
        """The options dataclass from keyword options; an unknown name is a ConfigError."""
        if self.options is None:
            raise ConfigError(f"--objective {self.name} takes no corruption options")
        known = self.defaults()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(
                f"--mode {self.name} takes no option {', '.join(flag_of(n) for n in unknown)}; "
                f"its options are {', '.join(flag_of(n) for n in known)}"
            )
        return self.options(**options)

    def build_corruptor(
        self, tokenizer: Tokenizer, **options: Any
    ) -> tuple[Corruptor, dict[str, Any]]:
        """The corruptor and the resolved options (ids included), which the
        stage records in its manifest."""
        parsed = self.parse(options)
        assert self.build is not None
        corruptor, resolved = self.build(tokenizer, parsed)
        return corruptor, {**dataclasses.asdict(parsed), **resolved}


def _eos_id(tokenizer: Tokenizer, eos: bool, eos_token: str | None) -> int | None:
    if not eos:
        return None
    return require_token(tokenizer, eos_token, EOS_CANDIDATES, "eos", "--eos-token")


def _mask(tokenizer: Tokenizer, name: str | None) -> int:
    return require_token(tokenizer, name, MASK_CANDIDATES, "mask", "--mask-token")


def _kernel_options(mode: str, o: Any) -> dict[str, Any]:
    """The options of `o` the Rust corruptor takes, by the names it exports
    its defaults under: a new option reaches Rust without a line here."""
    return {name: getattr(o, name) for name in _core.corruption_defaults(mode)}


def _build_mlm(tokenizer: Tokenizer, o: MlmOptions) -> tuple[Corruptor, dict[str, Any]]:
    mask_id = _mask(tokenizer, o.mask_token)
    corruptor = Corruptor.mlm(Vocab.from_tokenizer(tokenizer), mask_id, **_kernel_options("mlm", o))
    return corruptor, {"mask_id": mask_id}


def _build_span(tokenizer: Tokenizer, o: SpanOptions) -> tuple[Corruptor, dict[str, Any]]:
    sentinels = sentinel_ids(tokenizer, o.sentinels_from_top)
    eos_id = _eos_id(tokenizer, o.eos, o.eos_token)
    corruptor = Corruptor.span(
        Vocab.from_tokenizer(tokenizer), sentinels, eos_id=eos_id, **_kernel_options("span", o)
    )
    return corruptor, {"eos_id": eos_id, "sentinels": len(sentinels)}


def _build_bart(tokenizer: Tokenizer, o: BartOptions) -> tuple[Corruptor, dict[str, Any]]:
    mask_id = _mask(tokenizer, o.mask_token)
    if o.sentence_ends is None:
        found = (tokenizer.token_to_id(t) for t in SENTENCE_END_CANDIDATES)
        end_ids = [i for i in found if i is not None]
        if not end_ids and o.permute_sentence_ratio > 0:
            raise TokenizerError(
                "the tokenizer has none of the sentence ends "
                f"{' '.join(SENTENCE_END_CANDIDATES)} that sentence permutation needs; "
                "name them with --sentence-end, or pass --permute-sentence-ratio 0"
            )
    else:
        end_ids = [
            require_token(tokenizer, t, (t,), "sentence end", "--sentence-end")
            for t in o.sentence_ends
        ]
    corruptor = Corruptor.bart(
        Vocab.from_tokenizer(tokenizer),
        mask_id,
        sentence_ends=end_ids,
        **_kernel_options("bart", o),
    )
    return corruptor, {"mask_id": mask_id, "sentence_end_ids": end_ids}


def _build_prefix(tokenizer: Tokenizer, o: PrefixOptions) -> tuple[Corruptor, dict[str, Any]]:
    eos_id = _eos_id(tokenizer, o.eos, o.eos_token) if o.layout == "encoder-decoder" else None
    corruptor = Corruptor.prefix(
        Vocab.from_tokenizer(tokenizer), eos_id=eos_id, **_kernel_options("prefix", o)
    )
    return corruptor, {"eos_id": eos_id}


def _build_ul2(tokenizer: Tokenizer, o: Ul2Options) -> tuple[Corruptor, dict[str, Any]]:
    sentinels = sentinel_ids(tokenizer, o.sentinels_from_top)
    mode_ids = tuple(require_token(tokenizer, t, (t,), "mode", None) for t in UL2_MODE_TOKENS)
    eos_id = _eos_id(tokenizer, o.eos, o.eos_token)
    corruptor = Corruptor.ul2(
        Vocab.from_tokenizer(tokenizer),
        sentinels,
        mode_ids=(mode_ids[0], mode_ids[1], mode_ids[2]),
        eos_id=eos_id,
    )
    return corruptor, {"eos_id": eos_id, "sentinels": len(sentinels), "mode_ids": list(mode_ids)}


#: (density, mean span) of UL2's span denoisers (the paper's R and X).
UL2_SPAN_SETTINGS = ((0.15, 3.0), (0.15, 8.0), (0.5, 3.0), (0.5, 8.0), (0.15, 64.0), (0.5, 64.0))


def _t5_raw_length(options: Mapping[str, Any], input_length: int) -> int:
    """T5's length helper: the row that corrupts into exactly `input_length` inputs."""
    raw, _ = _core.t5_input_and_target_lengths(
        input_length, noise_density=options["noise_density"], mean_span=options["mean_span"]
    )
    return int(raw)


_SEQ2SEQ = Layout("encoder-decoder", decoder_start="pad", extra_positions=1)

OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective(
            "clm",
            "causal LM on packed rows (decoder)",
            {
                "default": Layout(
                    "decoder", None, keeps_length=True, text_targets=True, extra_positions=1
                )
            },
            reads=("pack",),
        ),
        Objective(
            "mlm",
            "BERT masked LM",
            {"default": Layout("encoder", None, keeps_length=True)},
            MlmOptions,
            _build_mlm,
            special_tokens=("mask",),
        ),
        Objective(
            "span",
            "T5 span corruption",
            {"default": _SEQ2SEQ},
            SpanOptions,
            _build_span,
            special_tokens=("sentinels", "eos"),
            raw_length=_t5_raw_length,
            span_settings=lambda o: [(o["noise_density"], o["mean_span"])],
        ),
        Objective(
            "bart",
            "BART (fairseq) denoising",
            {"default": Layout("encoder-decoder", decoder_start="eos", extra_positions=1)},
            BartOptions,
            _build_bart,
            special_tokens=("mask", "sentence ends"),
        ),
        Objective(
            "prefix",
            "prefix LM",
            {
                "decoder": Layout(
                    "decoder",
                    None,
                    columns=("prefix_lens",),
                    keeps_length=True,
                    text_targets=True,
                ),
                "encoder-decoder": Layout(
                    "encoder-decoder", "pad", text_targets=True, extra_positions=1
                ),
            },
            PrefixOptions,
            _build_prefix,
            layout_option="layout",
            special_tokens=("eos",),
        ),
        Objective(
            "ul2",
            "UL2 mixture of denoisers",
            {"default": Layout("encoder-decoder", "pad", columns=("denoiser",), extra_positions=1)},
            Ul2Options,
            _build_ul2,
            special_tokens=("sentinels", "mode tokens", "eos"),
            span_settings=lambda o: list(UL2_SPAN_SETTINGS),
        ),
        Objective(
            "contrastive",
            "InfoNCE on (query, positive, negatives) pairs (dual encoder)",
            {"default": Layout("dual-encoder", None)},
            reads=("pairs", "negatives"),
        ),
    )
}

#: The objectives the `corrupt` stage makes, in order.
CORRUPT_MODES = tuple(name for name, o in OBJECTIVES.items() if o.corrupts)


def objective(name: str, *, corrupting: bool = False) -> Objective:
    """The objective named `name`; a ConfigError for any other name (with
    `corrupting=True`, for one that `corrupt` does not make)."""
    names = CORRUPT_MODES if corrupting else tuple(OBJECTIVES)
    if name not in names:
        flag = "--mode" if corrupting else "--objective"
        raise ConfigError(f"{flag} {name!r} is not one of {', '.join(names)}")
    return OBJECTIVES[name]


def build_corruptor(
    mode: str, tokenizer: Tokenizer | str, **options: Any
) -> tuple[Corruptor, dict[str, Any]]:
    """The corruptor of `mode` and its resolved options; see :class:`Objective`."""
    from tokenmill.tokenizer import load_tokenizer

    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    return objective(mode, corrupting=True).build_corruptor(tok, **options)


def corrupt_options() -> dict[str, tuple[dataclasses.Field[Any], tuple[str, ...]]]:
    """Every corruption option once, with the modes that take it, in
    declaration order: the CLI's `corrupt` options and the README table.
    An option several modes take is declared alike in each."""
    merged: dict[str, tuple[dataclasses.Field[Any], tuple[str, ...]]] = {}
    for name in CORRUPT_MODES:
        options = OBJECTIVES[name].options
        assert options is not None
        for f in dataclasses.fields(options):
            if f.name in merged:
                first, modes = merged[f.name]
                if (first.default, first.type, dict(first.metadata)) != (
                    f.default,
                    f.type,
                    dict(f.metadata),
                ):
                    raise AssertionError(f"option {f.name} differs between {modes[0]} and {name}")
                merged[f.name] = (first, (*modes, name))
            else:
                merged[f.name] = (f, (name,))
    return merged


def options_table() -> str:
    """The README's table of `corrupt` options, written from the spec (a test
    checks the README holds it as written here)."""
    lines = ["| option | modes | default | domain | what |", "|---|---|---|---|---|"]
    for spec, modes in corrupt_options().values():
        flag = shown_flag(spec)
        domain = spec.metadata["domain"] or " ".join(spec.metadata["choices"])
        lines.append(
            f"| `{flag}` | {', '.join(modes)} | {shown_default(spec)} | {domain} "
            f"| {spec.metadata['help']} |"
        )
    return "\n".join(lines) + "\n"
