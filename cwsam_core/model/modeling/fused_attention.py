"""SAM's encoder attention computed by ``torch.nn.functional.scaled_dot_product_attention``.

``segment_anything``'s ``Attention`` builds every attention matrix explicitly and adds the decomposed
relative-position terms to it in Python; :class:`FusedAttention` computes the same function with
PyTorch's fused attention kernels, which never hold the N x N matrices in memory for backward (flash
attention on CPU, memory-efficient or flash attention on CUDA). Its parameters are SAM's own
(``qkv``, ``proj``, ``rel_pos_h``, ``rel_pos_w``), so official checkpoints load unchanged, and it can be
built from (and turned back into) a SAM ``Attention`` that shares them.

Unlike SAM's ``Attention``, it takes the whole token grid and does the window partition itself, with
SAM's padding and window order; that lets ``qkv`` and ``proj`` run on the real tokens only (the windowed
blocks of vit_b at S = 512 pad the 32 x 32 grid to 42 x 42: 72 % more tokens). Padded tokens still take
part as keys exactly as in SAM: there they are the projection of a zero vector, i.e. ``qkv``'s bias.

The decomposed relative-position term of query (qh, qw) and key (kh, kw) is
``rel_h[q, kh] + rel_w[q, kw]`` with ``rel_h = q . Rh[qh, kh]`` and ``rel_w = q . Rw[qw, kw]``
(unscaled q, as in SAM). It reaches the kernel in one of two equal forms:

- "bias": an additive attention mask B x heads x N x N (``attn_mask``). Used on CUDA (and other GPUs),
  whose memory-efficient kernel also differentiates the mask, and for CPU inference up to
  ``MASK_TOKENS_CPU`` tokens (windows, and global blocks up to S = 512), where it is a little faster.
- "folded": the two terms appended to the head dimension, ``q' = [q * scale, rel_h, rel_w]`` and
  ``k' = [k, onehot(kh), onehot(kw)]``, so ``q' . k' = scale q . k + rel_h[kh] + rel_w[kw]``, and ``v``
  zero-padded to the same width (the CPU kernel needs equal widths). Used on the CPU where gradients
  flow (PyTorch's CPU flash kernel does not differentiate an attention mask: training would fall back
  to the explicit computation) and for larger grids (no N x N tensor is written: a global block at
  S = 1024 would need 12 x 4096^2 mask entries per image). Costs (h + w) / head_dim more attention FLOPs.
- "explicit": no fused kernel; the attention matrix is written out as in SAM's ``Attention``
  (``softmax(scale q k^T + rel_h + rel_w) v``) but on windows cut from the real tokens' qkv. For the ONNX
  export (``onnx_export``), where a runtime has no such kernel: qkv and proj still skip the padding.

Where gradients flow, the attention between ``qkv`` and ``proj`` is recomputed in backward
(``torch.utils.checkpoint``; ``FusedAttention.recompute``): a block keeps its qkv tensor (B x H x W x 3C)
for backward instead of the padded q', k', v', the output and, on CUDA, the B x heads x N x N mask.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

# "auto" picks per call (see the module docstring); "bias", "folded" and "explicit" force one form
# (tests, benchmarks; "explicit" for the ONNX export).
STRATEGIES = ("auto", "bias", "folded", "explicit")
MASK_TOKENS_CPU = 1024  # CPU inference uses the mask up to this many tokens per window or grid


class FusedAttention(nn.Module):
    """Multi-head attention with SAM's decomposed relative positions, windowed or global.

    x: B x H x W x C tokens -> B x H x W x C. With ``window_size`` > 0 the grid is padded to a multiple
    of the window and attention runs within each window_size x window_size window, as in SAM's ``Block``;
    with 0 it is global over the H x W grid.
    """

    strategy: str = "auto"
    # Where gradients flow, recompute the attention in backward from qkv instead of keeping its tensors.
    recompute: bool = True

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        input_size: Optional[Tuple[int, int]] = None,
        window_size: int = 0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        self.window_size = window_size
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is needed for relative position tables")
            size = (window_size, window_size) if window_size > 0 else input_size
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * size[1] - 1, head_dim))

    @classmethod
    def from_attention(cls, attention: Attention, window_size: int) -> "FusedAttention":
        """A FusedAttention sharing ``attention``'s parameters (SAM's, for blocks of this window size)."""
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        fused.num_heads, fused.scale, fused.use_rel_pos = attention.num_heads, attention.scale, attention.use_rel_pos
        fused.window_size = window_size
        fused.qkv, fused.proj = attention.qkv, attention.proj
        if attention.use_rel_pos:
            fused.rel_pos_h, fused.rel_pos_w = attention.rel_pos_h, attention.rel_pos_w
        fused.train(attention.training)
        return fused

    def to_attention(self) -> Attention:
        """SAM's own ``Attention`` sharing these parameters (it expects windows already partitioned)."""
        attention = Attention.__new__(Attention)
        nn.Module.__init__(attention)
        attention.num_heads, attention.scale, attention.use_rel_pos = self.num_heads, self.scale, self.use_rel_pos
        attention.qkv, attention.proj = self.qkv, self.proj
        if self.use_rel_pos:
            attention.rel_pos_h, attention.rel_pos_w = self.rel_pos_h, self.rel_pos_w
        attention.train(self.training)
        return attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)  # B x H x W x 3C, real tokens only
        needs_grad = torch.is_grad_enabled() and (
            qkv.requires_grad or (self.use_rel_pos and self.rel_pos_h.requires_grad))
        if needs_grad and self.recompute:
            # Keep only qkv for backward and compute the attention again there (as flash attention does
            # within its kernel): no q', k', v', padded windows or masks are held per block.
            out = checkpoint(self._attention, qkv, use_reentrant=False)
        else:
            out = self._attention(qkv)
        return self.proj(out)

    def _attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """qkv: B x H x W x 3C -> attention output B x H x W x C (before ``proj``)."""
        batch, height, width, channels = qkv.shape
        dim = channels // 3
        heads, head_dim = self.num_heads, dim // self.num_heads
        ws = self.window_size
        if ws > 0:
            pad_h, pad_w = (ws - height % ws) % ws, (ws - width % ws) % ws
            if pad_h or pad_w:
                qkv = _pad_like_zero_tokens(qkv, self.qkv.bias, pad_h, pad_w)
            rows, cols = (height + pad_h) // ws, (width + pad_w) // ws
            # One copy into windows that moves whole 3C token vectors: (B rows cols) x (ws ws) x 3C;
            # q, k and v are views of it, B' x heads x (ws ws) x hd.
            qkv = qkv.view(batch, rows, ws, cols, ws, channels).permute(0, 1, 3, 2, 4, 5)
            qkv = qkv.reshape(batch * rows * cols, ws * ws, 3, heads, head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            out = self._attend(q, k, v, (ws, ws))  # B' x heads x ws^2 x hd
            out = out.view(batch, rows, cols, heads, ws, ws, head_dim).permute(0, 1, 4, 2, 5, 3, 6)
            out = out.reshape(batch, rows * ws, cols * ws, dim)
            # contiguous: a strided input would make proj's matmul expand its weight per row
            return out[:, :height, :width].contiguous() if pad_h or pad_w else out
        q, k, v = qkv.reshape(batch, height * width, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = self._attend(q, k, v, (height, width))  # B x heads x N x hd
        return out.permute(0, 2, 1, 3).reshape(batch, height, width, dim)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """q, k, v: B' x heads x N x hd over a grid of N = h x w tokens -> B' x heads x N x hd."""
        strategy = self._strategy(q)
        if not self.use_rel_pos:
            if strategy == "explicit":
                return ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
            return F.scaled_dot_product_attention(q, k, v)
        h, w = grid
        batch, heads, tokens, head_dim = q.shape
        rh = _relative_table(h, self.rel_pos_h).to(q.dtype)  # h x h x hd
        rw = _relative_table(w, self.rel_pos_w).to(q.dtype)  # w x w x hd
        grid_q = q.reshape(batch, heads, h, w, head_dim)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, rh)  # B' x heads x h x w x h(keys)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, rw)  # B' x heads x h x w x w(keys)
        if strategy == "explicit":
            # SAM's arithmetic: the relative terms broadcast into the query-key grid of the matrix.
            attn = ((q * self.scale) @ k.transpose(-2, -1)).view(batch, heads, h, w, h, w)
            attn = attn + rel_h[..., :, None] + rel_w[..., None, :]
            return attn.view(batch, heads, tokens, tokens).softmax(dim=-1) @ v
        if strategy == "bias":
            # From contiguous terms: the einsums' outputs are strided, and the sum would inherit their
            # layout and need a copy of the whole mask to reach B x heads x N x N.
            bias = (rel_h.contiguous()[..., :, None] + rel_w.contiguous()[..., None, :]).reshape(
                batch, heads, tokens, tokens)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        key_rows = torch.arange(h, device=q.device).repeat_interleave(w)
        key_cols = torch.arange(w, device=q.device).repeat(h)
        onehots = torch.cat([F.one_hot(key_rows, h), F.one_hot(key_cols, w)], dim=-1).to(q.dtype)  # N x (h + w)
        folded_q = torch.cat([q * self.scale, rel_h.reshape(batch, heads, tokens, h),
                              rel_w.reshape(batch, heads, tokens, w)], dim=-1)
        folded_k = torch.cat([k, onehots.expand(batch, heads, tokens, h + w)], dim=-1)
        folded_v = F.pad(v, (0, h + w))
        return F.scaled_dot_product_attention(folded_q, folded_k, folded_v, scale=1.0)[..., :head_dim]

    def _strategy(self, q: torch.Tensor) -> str:
        if self.strategy != "auto":
            return self.strategy
        if q.device.type != "cpu":
            return "bias"
        # CPU: fold where gradients flow (the CPU kernel cannot differentiate a mask) or where masks grow
        # large (over 1024 tokens: a global block at S > 512); otherwise the mask is a little faster.
        needs_grad = torch.is_grad_enabled() and (q.requires_grad or self.rel_pos_h.requires_grad)
        return "folded" if needs_grad or q.shape[-2] > MASK_TOKENS_CPU else "bias"


def _relative_table(size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """``get_rel_pos(size, size, rel_pos)``: size x size x C, entry [i, j] = rel_pos[i - j + size - 1].

    A table of exactly 2 size - 1 rows gives it as a view (row i is rows size - 1 - i ... 2 size - 2 - i
    of the flipped table, flipped back), without the gather of ``get_rel_pos``, whose threads cost
    milliseconds per call on a busy CPU; other tables are interpolated by ``get_rel_pos`` itself, and
    the ONNX export takes the gather too (its exporter has no ``unfold`` of this kind)."""
    if rel_pos.shape[0] != 2 * size - 1 or torch.onnx.is_in_onnx_export():
        return get_rel_pos(size, size, rel_pos)
    windows = rel_pos.flip(0).unfold(0, size, 1)  # size x C x size: windows[s] = flipped[s : s + size]
    return windows.flip(0).permute(0, 2, 1)


def _pad_like_zero_tokens(qkv: torch.Tensor, bias: Optional[torch.Tensor], pad_h: int, pad_w: int) -> torch.Tensor:
    """qkv: B x H x W x 3C -> B x (H + pad_h) x (W + pad_w) x 3C, the new tokens holding what ``qkv``
    makes of SAM's zero padding: its bias (zeros without one)."""
    if bias is None:
        return F.pad(qkv, (0, 0, 0, pad_w, 0, pad_h))
    batch, height, width, channels = qkv.shape
    if torch.onnx.is_in_onnx_export():
        # Concatenation, not writes into an empty tensor (ScatterND in the graph): a little faster in
        # ONNX Runtime (vit_b at S = 512: 3.17 against 3.32 s per batch of 2, one paired run).
        bias = bias.to(qkv.dtype)
        if pad_w:
            qkv = torch.cat([qkv, bias.expand(batch, height, pad_w, channels)], dim=2)
        if pad_h:
            qkv = torch.cat([qkv, bias.expand(batch, pad_h, width + pad_w, channels)], dim=1)
        return qkv
    padded = qkv.new_empty(batch, height + pad_h, width + pad_w, channels)
    padded[:, :height, :width] = qkv
    bias = bias.to(qkv.dtype)
    if pad_h:
        padded[:, height:] = bias
    if pad_w:
        padded[:, :height, width:] = bias
    return padded
