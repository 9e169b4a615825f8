"""The authors' CWSAM (xypu98/CWSAM @ 7bbb32a) for tests: their state dict's keys and shapes, and their
forward pass, written from their code's description (cwsam-reference.md and their models/sam.py,
models/mmseg/models/sam/image_encoder.py, mask_decoder.py), separate from the engine.

Only SAM's own building blocks their code copies unchanged are reused (windowed attention with
relative positions, the two-way transformer); the parts that make CWSAM (their PromptGenerator with its
embedding reshape, their adapted Block, their classwise mask decoder) are written out here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from segment_anything.modeling import TwoWayTransformer
from segment_anything.modeling.image_encoder import Attention, window_partition, window_unpartition
from torch.nn import functional as F

# A copy of ../shared/docs/authors-checkpoint-keys.txt: the 480 keys of their state dict.
KEYS_FILE = Path(__file__).with_name("authors_checkpoint_keys.txt")
FUSAR_LOSS_WEIGHT = [1.5, 1.0, 0.5, 1.9, 0.1]
# Embeddings drawn from N(0, 1) as their modules initialise them; other weights get std 1 / sqrt(fan-in).
UNSCALED = {"mask_decoder.iou_token.weight", "mask_decoder.mask_tokens.weight", "no_mask_embed.weight",
            "pe_layer.positional_encoding_gaussian_matrix"}


@dataclass(frozen=True)
class Dims:
    """The sizes their config sets (configs/fusar-sar-map-...yaml: encoder_mode, num_classes)."""

    embed: int = 768
    depth: int = 12
    heads: int = 12
    global_blocks: Tuple[int, ...] = (2, 5, 8, 11)
    window: int = 14
    image: int = 1024
    patch: int = 16
    prompt: int = 256  # prompt_embed_dim: the decoder's width
    decoder_mlp: int = 2048
    decoder_heads: int = 8
    iou_hidden: int = 256
    classes: int = 5
    scale_factor: int = 32  # PromptGenerator: d = embed / 32


VIT_B = Dims()
VIT_NANO = Dims(embed=64, depth=2, heads=2, global_blocks=(1,), window=4, image=128, prompt=32, decoder_mlp=64,
                decoder_heads=2, iou_hidden=32)


def authors_shapes(dims: Dims = VIT_B, loss_weight: bool = True) -> Dict[str, Tuple[int, ...]]:
    """Every tensor of their ``SAM`` module (models/sam.py) and its shape, from their modules' definitions."""
    D, d, P, g = dims.embed, dims.embed // dims.scale_factor, dims.prompt, dims.image // dims.patch
    head = D // dims.heads
    shapes: Dict[str, Tuple[int, ...]] = {}

    def linear(name: str, out: int, inp: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (out, inp), (out,)

    def norm(name: str, width: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (width,), (width,)

    enc = "image_encoder"
    shapes[f"{enc}.patch_embed.proj.weight"] = (D, 3, dims.patch, dims.patch)
    shapes[f"{enc}.patch_embed.proj.bias"] = (D,)
    shapes[f"{enc}.pos_embed"] = (1, g, g, D)
    for i in range(dims.depth):
        block = f"{enc}.blocks.{i}"
        size = g if i in dims.global_blocks else dims.window
        norm(f"{block}.norm1", D)
        linear(f"{block}.attn.qkv", 3 * D, D)
        linear(f"{block}.attn.proj", D, D)
        shapes[f"{block}.attn.rel_pos_h"] = shapes[f"{block}.attn.rel_pos_w"] = (2 * size - 1, head)
        norm(f"{block}.norm2", D)
        linear(f"{block}.mlp.lin1", 4 * D, D)
        linear(f"{block}.mlp.lin2", D, 4 * D)
        for adapter in ("MLP_Adapter", "Space_Adapter", "Depth_Adapter"):  # Adapter(D, mlp_ratio=0.25)
            linear(f"{block}.{adapter}.D_fc1", D // 4, D)
            linear(f"{block}.{adapter}.D_fc2", D, D // 4)
    shapes[f"{enc}.neck.0.weight"] = (P, D, 1, 1)
    norm(f"{enc}.neck.1", P)
    shapes[f"{enc}.neck.2.weight"] = (P, P, 3, 3)
    norm(f"{enc}.neck.3", P)
    pg = f"{enc}.prompt_generator"
    linear(f"{pg}.shared_mlp", D, d)
    linear(f"{pg}.embedding_generator", d, D)
    for i in range(dims.depth):
        linear(f"{pg}.lightweight_mlp_{i}.0", d, d)
    shapes[f"{pg}.prompt_generator.proj.weight"], shapes[f"{pg}.prompt_generator.proj.bias"] = \
        (d, 3, dims.patch, dims.patch), (d,)

    dec = "mask_decoder"
    half = P // 2  # cross attention with downsample rate 2

    def attention(name: str, internal: int) -> None:
        for proj in ("q_proj", "k_proj", "v_proj"):
            linear(f"{name}.{proj}", internal, P)
        linear(f"{name}.out_proj", P, internal)

    for layer in range(2):
        base = f"{dec}.transformer.layers.{layer}"
        attention(f"{base}.self_attn", P)
        norm(f"{base}.norm1", P)
        attention(f"{base}.cross_attn_token_to_image", half)
        norm(f"{base}.norm2", P)
        linear(f"{base}.mlp.lin1", dims.decoder_mlp, P)
        linear(f"{base}.mlp.lin2", P, dims.decoder_mlp)
        norm(f"{base}.norm3", P)
        norm(f"{base}.norm4", P)
        attention(f"{base}.cross_attn_image_to_token", half)
    attention(f"{dec}.transformer.final_attn_token_to_image", half)
    norm(f"{dec}.transformer.norm_final_attn", P)
    shapes[f"{dec}.iou_token.weight"], shapes[f"{dec}.mask_tokens.weight"] = (1, P), (4, P)
    shapes[f"{dec}.output_upscaling.0.weight"], shapes[f"{dec}.output_upscaling.0.bias"] = (P, P // 4, 2, 2), (P // 4,)
    norm(f"{dec}.output_upscaling.1", P // 4)
    shapes[f"{dec}.output_upscaling.3.weight"] = (P // 4, P // 8, 2, 2)
    shapes[f"{dec}.output_upscaling.3.bias"] = (P // 8,)
    for i in range(4):
        linear(f"{dec}.output_hypernetworks_mlps.{i}.layers.0", P, P)
        linear(f"{dec}.output_hypernetworks_mlps.{i}.layers.1", P, P)
        linear(f"{dec}.output_hypernetworks_mlps.{i}.layers.2", P // 8, P)
    linear(f"{dec}.iou_prediction_head.layers.0", dims.iou_hidden, P)
    linear(f"{dec}.iou_prediction_head.layers.1", dims.iou_hidden, dims.iou_hidden)
    linear(f"{dec}.iou_prediction_head.layers.2", 4, dims.iou_hidden)
    shapes[f"{dec}.cls_upscaling.0.weight"], shapes[f"{dec}.cls_upscaling.0.bias"] = (P // 4, P // 4, 2, 2), (P // 4,)
    norm(f"{dec}.cls_upscaling.1", P // 4)
    shapes[f"{dec}.cls_upscaling.3.weight"] = (P * dims.classes // 8, P // 4, 7, 7)
    shapes[f"{dec}.cls_upscaling.3.bias"] = (P * dims.classes // 8,)
    if loss_weight:
        shapes["criterionBCE.weight"] = (dims.classes,)  # CrossEntropyLoss(weight) when loss_weight is set
    shapes["pe_layer.positional_encoding_gaussian_matrix"] = (2, P // 2)
    shapes["no_mask_embed.weight"] = (1, P)
    return shapes


def authors_state(dims: Dims = VIT_B, seed: int = 0,
                  loss_weight: Sequence[float] | None = None) -> Dict[str, torch.Tensor]:
    """A random state dict of their model (seeded): weights of std 1/sqrt(fan-in), norms near 1."""
    generator = torch.Generator().manual_seed(seed)
    weights = list(loss_weight) if loss_weight is not None else (FUSAR_LOSS_WEIGHT if dims.classes == 5 else None)
    state = {}
    for key, shape in authors_shapes(dims, loss_weight=weights is not None).items():
        if key == "criterionBCE.weight":
            state[key] = torch.tensor(weights, dtype=torch.float32)
            continue
        values = torch.randn(shape, generator=generator)
        if key.endswith(".bias") or "rel_pos" in key or key.endswith("pos_embed"):
            values *= 0.1
        elif (".norm" in key or "neck.1" in key or "neck.3" in key or "upscaling.1" in key) and len(shape) == 1:
            values = 1.0 + 0.1 * values
        elif len(shape) >= 2 and key not in UNSCALED:
            values /= math.sqrt(math.prod(shape[1:]))
        state[key] = values
    return state


def sam_state_from(authors: Dict[str, torch.Tensor], sam: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """An official-layout SAM state dict (``sam``, e.g. a random one) whose image encoder is the frozen
    encoder saved in ``authors``: the SAM checkpoint their model was trained from."""
    out = dict(sam)
    for key in sam:
        if key.startswith("image_encoder."):
            out[key] = authors[key].clone()
    return out


# --- their forward ------------------------------------------------------------------------------


def fit_tables(state: Dict[str, torch.Tensor], dims: Dims, size: int, rel_pos: str) -> Dict[str, torch.Tensor]:
    """Their position tables (built for ``dims.image``) for inputs of ``size``: the absolute embedding
    resized bicubically, the global blocks' relative tables centre-cropped ("crop") or resized linearly."""
    grid = size // dims.patch
    out = dict(state)
    pos = state["image_encoder.pos_embed"]
    if pos.shape[1] != grid:
        out["image_encoder.pos_embed"] = F.interpolate(pos.permute(0, 3, 1, 2), size=(grid, grid), mode="bicubic",
                                                       align_corners=False).permute(0, 2, 3, 1)
    for i in dims.global_blocks:
        for axis in "hw":
            key = f"image_encoder.blocks.{i}.attn.rel_pos_{axis}"
            table, length = state[key], 2 * grid - 1
            if table.shape[0] == length:
                continue
            if rel_pos == "crop" and length < table.shape[0]:
                start = (table.shape[0] - length) // 2
                out[key] = table[start : start + length]
            else:
                out[key] = F.interpolate(table.t()[None], size=length, mode="linear", align_corners=False)[0].t()
    return out


def _their_fft_lowpass(x: torch.Tensor, rate: float = 0.25) -> torch.Tensor:
    """PromptGenerator.fft, low-pass branch, as written (fftshift over every axis, central square)."""
    mask = torch.zeros(x.shape)
    w, h = x.shape[-2:]
    line = int((w * h * rate) ** 0.5 // 2)
    mask[:, :, w // 2 - line : w // 2 + line, h // 2 - line : h // 2 + line] = 1
    fft = torch.fft.fftshift(torch.fft.fft2(x, norm="forward"))
    low = fft * mask
    inverse = torch.fft.ifft2(torch.fft.ifftshift(torch.complex(low.real, low.imag)), norm="forward").real
    return torch.abs(inverse)


def _layer_norm_2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    return weight[:, None, None] * ((x - mean) / torch.sqrt(var + eps)) + bias[:, None, None]


class AuthorsModel:
    """Their ``SAM.infer`` (models/sam.py) on their state dict, one image at a time (their batch is 1).

    ``embedding_quirk`` False feeds each token its own features to ``embedding_generator`` instead of
    their reshape, to show that the quirk matters.
    """

    def __init__(self, state: Dict[str, torch.Tensor], dims: Dims, size: int, embedding_quirk: bool = True) -> None:
        self.s, self.dims, self.size, self.quirk = state, dims, size, embedding_quirk
        grid = size // dims.patch
        self.attn: List[Attention] = []
        for i in range(dims.depth):
            window = dims.window if i not in dims.global_blocks else 0
            module = Attention(dims.embed, num_heads=dims.heads, qkv_bias=True, use_rel_pos=True,
                               input_size=(grid, grid) if window == 0 else (window, window))
            module.load_state_dict({k.split(".attn.", 1)[1]: v for k, v in state.items()
                                    if k.startswith(f"image_encoder.blocks.{i}.attn.")})
            self.attn.append(module.eval())
        self.transformer = TwoWayTransformer(depth=2, embedding_dim=dims.prompt, mlp_dim=dims.decoder_mlp,
                                             num_heads=dims.decoder_heads)
        self.transformer.load_state_dict({k[len("mask_decoder.transformer."):]: v for k, v in state.items()
                                          if k.startswith("mask_decoder.transformer.")})
        self.transformer.eval()

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.s[f"{name}.weight"], self.s[f"{name}.bias"])

    def _adapter(self, x: torch.Tensor, name: str, skip: bool) -> torch.Tensor:
        out = self._linear(F.gelu(self._linear(x, f"{name}.D_fc1")), f"{name}.D_fc2")
        return x + out if skip else out

    def _block(self, x: torch.Tensor, i: int) -> torch.Tensor:
        s, p, dim = self.s, f"image_encoder.blocks.{i}", self.dims.embed
        window = 0 if i in self.dims.global_blocks else self.dims.window
        shortcut = x
        x = F.layer_norm(x, (dim,), s[f"{p}.norm1.weight"], s[f"{p}.norm1.bias"], eps=1e-6)
        if window:
            height, width = x.shape[1], x.shape[2]
            x, pad = window_partition(x, window)
        x = self.attn[i](x)
        x = self._adapter(x, f"{p}.Space_Adapter", skip=True)  # per window, before unpartitioning
        if window:
            x = window_unpartition(x, window, pad, (height, width))
        x = shortcut + x
        xn = F.layer_norm(x, (dim,), s[f"{p}.norm2.weight"], s[f"{p}.norm2.bias"], eps=1e-6)
        mlp = self._linear(F.gelu(self._linear(xn, f"{p}.mlp.lin1")), f"{p}.mlp.lin2")
        return x + mlp + 0.5 * self._adapter(xn, f"{p}.MLP_Adapter", skip=False)

    def encoder(self, image: torch.Tensor) -> torch.Tensor:
        s, enc, pg = self.s, "image_encoder", "image_encoder.prompt_generator"
        x = F.conv2d(image, s[f"{enc}.patch_embed.proj.weight"], s[f"{enc}.patch_embed.proj.bias"],
                     stride=self.dims.patch).permute(0, 2, 3, 1)  # PatchEmbed: B x H x W x C
        # PromptGenerator.init_embeddings: N, C, H, W = x.permute(0, 3, 1, 2).shape;
        # x = x.reshape(N, C, H*W).permute(0, 2, 1) -- on the B x H x W x C tensor, as their code does.
        n, c, h, w = x.permute(0, 3, 1, 2).shape
        tokens = x.reshape(n, c, h * w).permute(0, 2, 1) if self.quirk else x.reshape(n, h * w, c)
        embedding_feature = self._linear(tokens, f"{pg}.embedding_generator")
        handcrafted = F.conv2d(_their_fft_lowpass(image), s[f"{pg}.prompt_generator.proj.weight"],
                               s[f"{pg}.prompt_generator.proj.bias"], stride=self.dims.patch)
        hn, hc, hh, hw = handcrafted.shape
        handcrafted = handcrafted.view(hn, hc, hh * hw).permute(0, 2, 1)
        prompts = [self._linear(F.gelu(self._linear(handcrafted + embedding_feature, f"{pg}.lightweight_mlp_{i}.0")),
                                f"{pg}.shared_mlp") for i in range(self.dims.depth)]
        x = x + s[f"{enc}.pos_embed"]
        batch, height, width = x.shape[:3]
        for i in range(self.dims.depth):
            x = prompts[i].reshape(batch, height, width, -1) + x
            x = self._block(x, i)
        x = x.permute(0, 3, 1, 2)
        x = _layer_norm_2d(F.conv2d(x, s[f"{enc}.neck.0.weight"]), s[f"{enc}.neck.1.weight"], s[f"{enc}.neck.1.bias"])
        x = F.conv2d(x, s[f"{enc}.neck.2.weight"], padding=1)
        return _layer_norm_2d(x, s[f"{enc}.neck.3.weight"], s[f"{enc}.neck.3.bias"])

    def _positional_encoding(self, size: int) -> torch.Tensor:
        grid = torch.ones((size, size))
        y = (grid.cumsum(dim=0) - 0.5) / size
        x = (grid.cumsum(dim=1) - 0.5) / size
        coords = 2 * torch.stack([x, y], dim=-1) - 1
        coords = 2 * math.pi * (coords @ self.s["pe_layer.positional_encoding_gaussian_matrix"])
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1).permute(2, 0, 1)

    def _upscale(self, x: torch.Tensor) -> torch.Tensor:
        s, u = self.s, "mask_decoder.output_upscaling"
        x = F.conv_transpose2d(x, s[f"{u}.0.weight"], s[f"{u}.0.bias"], stride=2)
        x = F.gelu(_layer_norm_2d(x, s[f"{u}.1.weight"], s[f"{u}.1.bias"]))
        return F.gelu(F.conv_transpose2d(x, s[f"{u}.3.weight"], s[f"{u}.3.bias"], stride=2))

    def decoder(self, embedding: torch.Tensor) -> torch.Tensor:
        """MaskDecoder.predict_masks with no prompts, then mask token 0 (multimask_output=False)."""
        s, dec, grid = self.s, "mask_decoder", self.size // self.dims.patch
        tokens = torch.cat([s[f"{dec}.iou_token.weight"], s[f"{dec}.mask_tokens.weight"]], dim=0)[None]
        dense = s["no_mask_embed.weight"].reshape(1, -1, 1, 1).expand(1, -1, grid, grid)
        src = embedding + dense
        pos = self._positional_encoding(grid)[None]
        b, c, h, w = src.shape
        hs, out = self.transformer(src, pos, tokens)
        out = out.transpose(1, 2).view(b, c, h, w)
        upscaled, upscaled_src = self._upscale(out), self._upscale(src)
        hyper = []
        for i in range(4):
            t = hs[:, 1 + i, :]
            m = f"{dec}.output_hypernetworks_mlps.{i}.layers"
            hyper.append(self._linear(F.relu(self._linear(F.relu(self._linear(t, f"{m}.0")), f"{m}.1")), f"{m}.2"))
        hyper_in = torch.stack(hyper, dim=1)  # 1 x 4 x c/8
        b, c, h, w = upscaled.shape
        u = f"{dec}.cls_upscaling"
        x = torch.cat([upscaled, upscaled_src], dim=1)
        x = F.conv_transpose2d(x, s[f"{u}.0.weight"], s[f"{u}.0.bias"], stride=2)
        x = F.gelu(_layer_norm_2d(x, s[f"{u}.1.weight"], s[f"{u}.1.bias"]))
        x = F.gelu(F.conv2d(x, s[f"{u}.3.weight"], s[f"{u}.3.bias"], stride=2, padding=3))
        masks = (hyper_in @ x.view(b, c, self.dims.classes * h * w)).view(b, 4, -1, h, w)
        return masks[:, 0:1][0]  # masks[:, mask_slice] then postprocess_masks' masks[0]: 1 x N x h x w

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x S x S normalised images -> B x N x S x S logits, one image at a time."""
        out = []
        for image in images:
            masks = self.decoder(self.encoder(image[None]))
            out.append(F.interpolate(masks, (self.size, self.size), mode="bilinear", align_corners=False))
        return torch.cat(out)


# --- files --------------------------------------------------------------------------------------


def write_authors_files(folder: Path, dims: Dims = VIT_NANO, seed: int = 0, sam_seed: int = 1,
                        wrap=None, state: Dict[str, torch.Tensor] | None = None) -> Tuple[Path, Path]:
    """Their checkpoint (``model_epoch_best.pth``: ``state``, else ``authors_state(dims, seed)``, with
    ``wrap`` applied if given) and the official-layout SAM checkpoint it was trained from; returns
    (checkpoint, SAM checkpoint)."""
    from cwsam_core.model.build import backbone_by_shape, build_bare_sam

    backbone = backbone_by_shape(dims.embed, dims.depth)
    state = state if state is not None else authors_state(dims, seed)
    checkpoint = folder / "model_epoch_best.pth"
    torch.save(wrap(state) if wrap else state, checkpoint)
    torch.manual_seed(sam_seed)
    sam = folder / f"sam_{backbone}.pth"
    torch.save(sam_state_from(state, build_bare_sam(backbone).state_dict()), sam)
    return checkpoint, sam


def write_grey8(path: Path, size: int, seed: int = 0, nodata=None) -> Path:
    """An 8-bit single-band GeoTIFF (no band description) with bright and dark regions and speckle."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    mean = 90 + 70 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    values = np.clip(mean * rng.gamma(4.0, 0.25, (size, size)), 0, 255).astype(np.uint8)
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs="EPSG:32650",
                   transform=from_origin(300000.0, 3400000.0, 3.0, 3.0), nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values[None])
    return path


def authors_input(grey: np.ndarray) -> torch.Tensor:
    """Their data pipeline for one 8-bit tile: RGB copy, /255, ImageNet normalisation -> 1 x 3 x H x W."""
    image = torch.from_numpy(grey.astype("float32") / 255.0)[None].repeat(3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return ((image - mean) / std)[None]
