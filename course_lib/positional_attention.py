"""Attention that knows where its tokens are: ``MultiHeadAttention`` (lesson 01) plus the
four things the model families add, each tied to positions.

  rotary  RoPE (lesson 02): q and k rotated by their absolute position, so q·k depends on
          the distance only (Su et al. 2021, §3.4). GPT-NeoX/LLaMA/Mistral.
  bias    an additive float score by distance: ALiBi (Press et al. 2022) or T5's bucketed
          relative bias (Raffel et al. 2020, §2.1), computed once per model call.
  cache   a ``course_lib.kv_cache.KVCache`` (lessons 04 and 11): the new keys/values are
          appended (before repeat_kv, so it holds H_kv heads) and the new tokens' positions
          continue from ``cache.seq_len``.
  window  sliding-window attention (lesson 05; Mistral §2): position p sees keys
          p-window+1 .. p, the token itself and the window-1 before it.

Everything else - the projections, the attention step and its two paths, the output - is
inherited, so GPT-2, LLaMA, Mistral, T5 and the experiments keep Hugging Face's parameter
names and parity.
"""
from __future__ import annotations

import torch

from course_lib.attention import MultiHeadAttention, position_mask


class PositionalAttention(MultiHeadAttention):
    """Self-attention with RoPE, an additive position bias, a KV cache and a sliding window,
    each optional. x (B, T, C) -> (B, T, C)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
                return_weights: bool = False, *, rotary=None, bias: torch.Tensor | None = None,
                cache=None, window: int | None = None):
        """x (B, T, C); mask bool broadcastable to (B, H, T, T_k), True = may attend.

        rotary: RoPE for q and k, either ``(cos, sin)`` of the new tokens, each (T, D) or (B, T, D)
                in Hugging Face's "half" layout, or a callable ``rotary(x, positions) -> x``.
        bias:   additive float scores (ALiBi, T5 relative bias), broadcastable to (B, H, T, T_k).
        cache:  a KVCache; T_k = the cached tokens (at most ``cache.window``) + the T new ones.
        window: sliding-window attention (implies causal).
        """
        self.check_input(x)
        offset = 0 if cache is None else cache.seq_len
        positions = torch.arange(offset, offset + x.size(1), device=x.device)  # (T,)
        q, k, v = self.project(x, x)  # (B, H, T, D), (B, H_kv, T, D), (B, H_kv, T, D)
        if rotary is not None:
            q, k = self.rotate(q, rotary, positions), self.rotate(k, rotary, positions)
        k_pos = positions  # (T_k,)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, H_kv, T_k, D): every key so far
            k_pos = cache.key_positions.to(x.device)  # (T_k,)
        if window is not None or (is_causal and k.size(2) != q.size(2)):
            # keys from a cache or a window: causality by absolute position, not by index
            allowed = position_mask(positions, k_pos, causal=True, window=window)  # (T, T_k)
            mask, is_causal = (allowed if mask is None else mask & allowed), False
        out = self.attend(q, k, v, mask, is_causal=is_causal, bias=bias, return_weights=return_weights)
        return self.output(out, return_weights)

    @staticmethod
    def rotate(x: torch.Tensor, rotary, positions: torch.Tensor) -> torch.Tensor:
        """Apply RoPE to q or k (B, H, T, D) given as (cos, sin) or as a callable (see forward)."""
        if callable(rotary):
            return rotary(x, positions)
        if isinstance(rotary, (tuple, list)) and len(rotary) == 2:
            from course_lib.positional import apply_rotary  # lesson 02's RoPE
            return apply_rotary(x, rotary[0], rotary[1], layout="half")
        raise TypeError("rotary must be (cos, sin) from course_lib.positional.rope_cos_sin(..., "
                        f"layout='half') or a callable rotary(x, positions); got {type(rotary).__name__}.")
