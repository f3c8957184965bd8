"""Small transformer models for every objective tokenmill prepares data for.

One pre-norm block (self-attention, optional cross-attention, MLP) builds
all five families, nanoGPT-style:

- :class:`DecoderLM`: causal decoder (`clm`); with a prefix mask, the prefix
  LM (`prefix`): bidirectional over each document's prefix, causal after it.
- :class:`EncoderMLM`: bidirectional encoder with a tied LM head (`mlm`).
- :class:`EncoderDecoder`: encoder plus a causal decoder that cross-attends
  to it (`span`, `bart`, `ul2`, and `prefix` in its encoder-decoder layout).
- :class:`DualEncoder`: one bidirectional encoder for queries and documents,
  mean pooling, InfoNCE over in-batch and hard negatives (`contrastive`).

Who attends whom is one :class:`AttentionMask`: document ids (packed rows
never attend across documents; -1 marks padding), causal or not, and an
optional prefix. On CUDA it becomes a FlexAttention block mask, so packed
rows cost no dense `T x T` mask; elsewhere it is a boolean mask for
`scaled_dot_product_attention`. Every forward returns `(loss, logits)`.

:data:`FAMILIES` maps each family name of :mod:`tokenmill.objectives`
(`Layout.family`) to its model class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmill._core import ConfigError
from tokenmill.collate import IGNORE_INDEX
from tokenmill.train.config import SIZES

try:  # FlexAttention arrived in torch 2.5; older versions use dense masks everywhere.
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    HAVE_FLEX = True
except ImportError:  # pragma: no cover - depends on the installed torch
    HAVE_FLEX = False


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of one stack (an encoder-decoder has two stacks of `n_layer`)."""

    vocab_size: int
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    max_seq_len: int = 1024
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ConfigError(f"d_model {self.d_model} is not a multiple of n_head {self.n_head}")
        if min(self.vocab_size, self.n_layer, self.n_head, self.max_seq_len) < 1:
            raise ConfigError(f"every size of {self} must be positive")


def model_config(size: str, vocab_size: int, **overrides: Any) -> ModelConfig:
    if size not in SIZES:
        raise ConfigError(f"size {size!r} is not one of {', '.join(SIZES)}")
    return ModelConfig(vocab_size=vocab_size, **{**SIZES[size], **overrides})


# --- Masks ----------------------------------------------------------------

#: FlexAttention's block size: flex rows are padded to a multiple of it, so
#: one compiled kernel serves every batch width up to the next multiple.
FLEX_BLOCK = 128

_compiled_flex: Any = None


def _flex(q: Tensor, k: Tensor, v: Tensor, block_mask: Any) -> Tensor:
    # Uncompiled flex_attention materializes the scores; compiled, it is a
    # fused kernel that skips the masked blocks. Widths arrive padded to
    # FLEX_BLOCK, so static shapes compile once per (batch, width / 128).
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    out: Tensor = _compiled_flex(q, k, v, block_mask=block_mask)
    return out


@dataclass
class AttentionMask:
    """Query `q` may attend key `k` of the same row when both belong to the
    same document and, if causal, `k <= q` or both lie in the prefix. A
    token always attends itself, so padding rows are never empty (an empty
    softmax row is NaN, and NaN would spread).

    Three forms, each with the cheapest kernel that keeps the rule:

    - `document_ids` and `key_padding` None: one document per row, no
      padding: SDPA with `is_causal` (or no mask).
    - `key_padding` (`[B, T]`, True on real tokens, right-padded rows of one
      document each): SDPA; causal rows need no mask at all (a real query
      never reaches the padding after it), bidirectional ones a key mask.
    - `document_ids` (packed documents, -1 on padding) and optional
      `prefix`: a FlexAttention block mask on CUDA when `use_flex`, so
      packed rows cost no dense `T x T` mask; else a dense boolean mask.
    """

    document_ids: Tensor | None
    causal: bool
    prefix: Tensor | None = None
    use_flex: bool = False
    key_padding: Tensor | None = None

    def __post_init__(self) -> None:
        self._dense: Tensor | None = None
        self._block: Any = None

    @classmethod
    def padding(cls, attention_mask: Tensor, *, causal: bool) -> AttentionMask:
        """Right-padded rows of one document each (`attention_mask` 1 on real tokens)."""
        return cls(None, causal=causal, key_padding=attention_mask.bool())

    def dense(self) -> Tensor:
        """`[B, 1, T, T]` bool, True where attention is allowed (packed form)."""
        if self._dense is None:
            assert self.document_ids is not None
            docs = self.document_ids
            width = docs.shape[1]
            allowed = docs[:, :, None] == docs[:, None, :]
            if self.causal:
                order = torch.ones(width, width, dtype=torch.bool, device=docs.device).tril()
                if self.prefix is not None:
                    order = order | (self.prefix[:, :, None] & self.prefix[:, None, :])
                allowed = allowed & order
            allowed = allowed | torch.eye(width, dtype=torch.bool, device=docs.device)
            self._dense = allowed[:, None]
        return self._dense

    def mask_mod(self, width: int | None = None) -> Any:
        """The rule as FlexAttention's `mask_mod(b, h, q, k)`, over rows
        padded to `width` (extra positions form a padding document)."""
        assert self.document_ids is not None
        docs, prefix, causal = self.document_ids, self.prefix, self.causal
        extra = (width or docs.shape[1]) - docs.shape[1]
        if extra:
            docs = F.pad(docs, (0, extra), value=-1)
            if prefix is not None:
                prefix = F.pad(prefix, (0, extra), value=False)

        def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
            allowed = docs[b, q] == docs[b, k]
            if causal:
                order = k <= q
                if prefix is not None:
                    order = order | (prefix[b, q] & prefix[b, k])
                allowed = allowed & order
            return allowed | (q == k)

        return mask_mod

    def block_mask(self, width: int) -> Any:
        if self._block is None:
            assert self.document_ids is not None and HAVE_FLEX
            batch = self.document_ids.shape[0]
            device = self.document_ids.device
            self._block = create_block_mask(
                self.mask_mod(width), batch, None, width, width, device=device
            )
        return self._block

    def flex(self, q: Tensor) -> bool:
        """Whether this mask runs FlexAttention for queries `q`: packed or
        prefix masks on CUDA only; padding-only masks stay on SDPA."""
        return self.use_flex and self.document_ids is not None and q.is_cuda and HAVE_FLEX

    def attend(self, q: Tensor, k: Tensor, v: Tensor, dropout: float) -> Tensor:
        if self.document_ids is None:
            allowed = None
            if self.key_padding is not None and not self.causal:
                real = self.key_padding
                # A row of padding only attends everything rather than nothing.
                allowed = (real | ~real.any(1, keepdim=True))[:, None, None, :]
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=allowed, is_causal=self.causal, dropout_p=dropout
            )
        if self.flex(q):
            # FlexAttention has no dropout; the models it serves train with none by default.
            width = q.shape[2]
            padded = -(-width // FLEX_BLOCK) * FLEX_BLOCK
            if padded != width:
                q, k, v = (F.pad(t, (0, 0, 0, padded - width)) for t in (q, k, v))
            return _flex(q, k, v, self.block_mask(padded))[:, :, :width]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.dense(), dropout_p=dropout)


# --- The block ------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention; self-attention when `memory` is None."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.query = nn.Linear(config.d_model, config.d_model)
        self.key_value = nn.Linear(config.d_model, 2 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)

    def _heads(self, x: Tensor) -> Tensor:
        batch, width, channels = x.shape
        return x.view(batch, width, self.n_head, channels // self.n_head).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        mask: AttentionMask | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        source = x if memory is None else memory
        q = self._heads(self.query(x))
        k, v = (self._heads(t) for t in self.key_value(source).chunk(2, dim=-1))
        dropout = self.dropout if self.training else 0.0
        if memory is None:
            assert mask is not None
            y = mask.attend(q, k, v, dropout)
        else:
            # Cross-attention: every decoder token may read every real encoder token.
            allowed = None if memory_mask is None else memory_mask.bool()[:, None, None, :]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(x.shape)
        out: Tensor = F.dropout(self.proj(y), dropout, self.training)
        return out


class Block(nn.Module):
    """Pre-norm residual block: self-attention, cross-attention (decoders of
    encoder-decoders only), MLP."""

    def __init__(self, config: ModelConfig, *, cross_attention: bool = False) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(config.d_model)
        self.attention = Attention(config)
        self.norm_cross: nn.LayerNorm | None = None
        self.cross: Attention | None = None
        if cross_attention:
            self.norm_cross = nn.LayerNorm(config.d_model)
            self.cross = Attention(config)
        self.norm_mlp = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, 4 * config.d_model),
            nn.GELU(approximate="tanh"),
            nn.Linear(4 * config.d_model, config.d_model),
            nn.Dropout(config.dropout),
        )

    def forward(
        self,
        x: Tensor,
        mask: AttentionMask,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        x = x + self.attention(self.norm_attention(x), mask)
        if self.cross is not None and self.norm_cross is not None:
            x = x + self.cross(self.norm_cross(x), memory=memory, memory_mask=memory_mask)
        out: Tensor = x + self.mlp(self.norm_mlp(x))
        return out


class Stack(nn.Module):
    """Token and position embeddings, blocks, final norm: the trunk of every family."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        cross_attention: bool = False,
        tokens: nn.Embedding | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.tokens = (
            tokens if tokens is not None else nn.Embedding(config.vocab_size, config.d_model)
        )
        self.positions = nn.Embedding(config.max_seq_len, config.d_model)
        self.blocks = nn.ModuleList(
            Block(config, cross_attention=cross_attention) for _ in range(config.n_layer)
        )
        self.norm = nn.LayerNorm(config.d_model)

    def forward(
        self,
        input_ids: Tensor,
        mask: AttentionMask,
        position_ids: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        width = input_ids.shape[1]
        if width > self.config.max_seq_len:
            raise ConfigError(
                f"a row of {width} tokens is longer than the model's "
                f"{self.config.max_seq_len} positions; raise max_seq_len"
            )
        if position_ids is None:
            position_ids = torch.arange(width, device=input_ids.device)[None]
        x = self.tokens(input_ids) + self.positions(position_ids)
        for block in self.blocks:
            x = block(x, mask, memory, memory_mask)
        out: Tensor = self.norm(x)
        return out


def _init_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2's init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers)
    so the residual stream's variance does not grow with depth."""
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(param)
        elif "norm" in name:
            nn.init.ones_(param)
        elif name.endswith(("proj.weight", "mlp.2.weight")):
            nn.init.normal_(param, std=0.02 / math.sqrt(2 * n_layer))
        else:
            nn.init.normal_(param, std=0.02)


def count_parameters(model: nn.Module) -> int:
    """Parameters without position embeddings, as GPT-2's "124M" counts them
    (a shared embedding counts once)."""
    positions = sum(m.positions.weight.numel() for m in model.modules() if isinstance(m, Stack))
    return sum(p.numel() for p in model.parameters()) - positions


def _lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


class Model(nn.Module):
    """What every family shares: its sizes and its parameter count.

    A family's constructor takes `(config, *, use_flex=False, ...)`; the
    settings of `tokenmill train` it takes besides are named in `options`."""

    config: ModelConfig
    #: The TrainConfig fields passed to the constructor by name.
    options: ClassVar[tuple[str, ...]] = ()

    def num_parameters(self) -> int:
        return count_parameters(self)


class LanguageModel(Model):
    """What the LM families share: the loss and the tied output head."""

    #: True when `logits[:, t]` predicts `labels[:, t + 1]` (decoders read their own labels).
    shifts_labels = False
    #: True when, given labels, the logits are only the scored positions'
    #: (`[targets, vocab]`, in the order of `labels[labels != -100]`).
    gathers_targets = False


class _OneStackLM(LanguageModel):
    """A language model that is one transformer stack with a tied head."""

    def __init__(self, config: ModelConfig, *, use_flex: bool = False) -> None:
        super().__init__()
        self.config = config
        self.use_flex = use_flex
        self.stack = Stack(config)
        _init_weights(self, config.n_layer)


class DecoderLM(_OneStackLM):
    """Causal decoder; given `prefix_mask`, a prefix LM."""

    shifts_labels = True

    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        *,
        document_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        prefix_mask: Tensor | None = None,
    ) -> tuple[Tensor | None, Tensor]:
        mask = AttentionMask(document_ids, causal=True, prefix=prefix_mask, use_flex=self.use_flex)
        hidden = self.stack(input_ids, mask, position_ids)
        logits = hidden @ self.stack.tokens.weight.T
        if labels is None:
            return None, logits
        return _lm_loss(logits[:, :-1], labels[:, 1:]), logits


class EncoderMLM(_OneStackLM):
    """Bidirectional encoder predicting the original token at masked positions.

    Given labels, only the masked positions (about 15%) go through the
    vocabulary projection, and the logits returned are theirs alone."""

    gathers_targets = True

    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        *,
        document_ids: Tensor,
        position_ids: Tensor | None = None,
    ) -> tuple[Tensor | None, Tensor]:
        mask = AttentionMask(document_ids, causal=False, use_flex=self.use_flex)
        hidden = self.stack(input_ids, mask, position_ids)
        if labels is None:
            return None, hidden @ self.stack.tokens.weight.T
        scored = labels != IGNORE_INDEX
        logits = hidden[scored] @ self.stack.tokens.weight.T
        return _lm_loss(logits, labels[scored]), logits


class EncoderDecoder(LanguageModel):
    """T5/BART-style: the decoder reads `decoder_input_ids` (labels shifted
    right) causally and cross-attends to the encoded inputs."""

    def __init__(self, config: ModelConfig, *, use_flex: bool = False) -> None:
        super().__init__()
        self.config = config
        self.use_flex = use_flex
        self.encoder = Stack(config)
        self.decoder = Stack(config, cross_attention=True, tokens=self.encoder.tokens)
        _init_weights(self, 2 * config.n_layer)

    def forward(
        self,
        input_ids: Tensor,
        decoder_input_ids: Tensor,
        labels: Tensor | None = None,
        *,
        attention_mask: Tensor,
        decoder_attention_mask: Tensor,
    ) -> tuple[Tensor | None, Tensor]:
        encoder_mask = AttentionMask.padding(attention_mask, causal=False)
        memory = self.encoder(input_ids, encoder_mask)
        decoder_mask = AttentionMask.padding(decoder_attention_mask, causal=True)
        hidden = self.decoder(
            decoder_input_ids, decoder_mask, memory=memory, memory_mask=attention_mask
        )
        logits = hidden @ self.encoder.tokens.weight.T
        return (None if labels is None else _lm_loss(logits, labels)), logits


class DualEncoder(Model):
    """One encoder for queries and documents; embeddings are the mean of the
    real tokens' states, unit-normalized, so scores are cosines."""

    options = ("temperature", "symmetric")

    def __init__(
        self,
        config: ModelConfig,
        *,
        temperature: float = 0.05,
        symmetric: bool = False,
        use_flex: bool = False,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature {temperature} is not positive")
        self.config = config
        self.temperature = temperature
        self.symmetric = symmetric
        self.use_flex = use_flex
        self.stack = Stack(config)
        _init_weights(self, config.n_layer)

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.stack(input_ids, AttentionMask.padding(attention_mask, causal=False))
        weights = attention_mask.to(hidden.dtype)[:, :, None]
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        return F.normalize(pooled.float(), dim=-1)

    def forward(
        self,
        query_input_ids: Tensor,
        query_attention_mask: Tensor,
        doc_input_ids: Tensor,
        doc_attention_mask: Tensor,
        labels: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """InfoNCE: each query against every document of the batch (its
        positive, the other queries' positives and all hard negatives)."""
        queries = self.encode(query_input_ids, query_attention_mask)
        documents = self.encode(doc_input_ids, doc_attention_mask)
        scores = queries @ documents.T / self.temperature
        loss = F.cross_entropy(scores, labels)
        if self.symmetric:
            # Each positive picks its query among the batch's queries.
            count = queries.shape[0]
            loss = (loss + F.cross_entropy(scores[:, :count].T, labels)) / 2
        return loss, scores


#: The model class of each family (`tokenmill.objectives.FAMILIES`).
FAMILIES: dict[str, type[Model]] = {
    "decoder": DecoderLM,
    "encoder": EncoderMLM,
    "encoder-decoder": EncoderDecoder,
    "dual-encoder": DualEncoder,
}
