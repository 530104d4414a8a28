"""The Vision Transformer (Dosovitskiy et al. 2021), read top to bottom: images -> patches ->
patch embedding + class token + positions -> the encoder blocks of ``blocks.py`` -> a class
from the class token. Plus scikit-learn's bundled 8×8 digits as tensors (nothing downloaded).

Shapes: B images, Ch colour channels, S image side, P patch side, T = (S/P)² patches (+1 with the
class token), C model width, H heads."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .attention import recording
from .blocks import transformer_block
from .config import check_divisible, check_positive, check_range


@dataclass
class ViTConfig:
    """A tiny ViT; ViT-B/16 is image_size=224, patch_size=16, d_model=768, n_layers=12, n_heads=12."""
    image_size: int = 8
    patch_size: int = 2
    channels: int = 1
    n_classes: int = 10
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int | None = None
    dropout: float = 0.0

    def __post_init__(self):
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        check_positive(self, "image_size", "patch_size", "channels", "n_classes", "d_model", "n_layers",
                       "n_heads", "d_ff")
        check_divisible(self, "image_size", "patch_size",
                        why="patch_size must be a divisor of image_size so the patches tile the image")
        check_divisible(self, "d_model", "n_heads", why="each head gets d_model // n_heads channels")
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Section 3.1: cut (B, Ch, S, S) images into flattened P×P patches, row by row -> (B, T, Ch·P·P)."""
    B, Ch, S, _ = images.shape
    n = S // patch_size
    x = images.view(B, Ch, n, patch_size, n, patch_size)  # (B, Ch, n, P, n, P)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, n, n, Ch, P, P): patch row, patch column first
    return x.reshape(B, n * n, Ch * patch_size * patch_size)  # (B, T, Ch·P·P)


class PatchEmbedding(nn.Module):
    """Eq. 1's E: a linear map of each flattened patch. A Conv2d with kernel = stride = P is the
    same map applied at every patch position (what most code, and Hugging Face, writes)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.projection = nn.Conv2d(cfg.channels, cfg.d_model, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.projection(images)  # (B, C, S/P, S/P)
        return x.flatten(2).transpose(1, 2)  # (B, T, C)


class VisionTransformer(nn.Module):
    """Eq. 1-4: z0 = [x_class; x_p E] + E_pos; pre-LN encoder blocks; y = LN(z_L^0) -> linear head."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.config = cfg
        self.patch_embed = PatchEmbedding(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))  # (1, 1, C)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.n_patches + 1, cfg.d_model) * 0.02)  # (1, T+1, C)
        self.blocks = nn.ModuleList(transformer_block(cfg.d_model, cfg.n_heads, cfg.d_ff, dropout=cfg.dropout)
                                    for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if images.dim() != 4 or tuple(images.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
            raise ValueError(f"VisionTransformer: expected images (B, {cfg.channels}, {cfg.image_size}, "
                             f"{cfg.image_size}); got {tuple(images.shape)}.")
        x = self.patch_embed(images)  # (B, T, C)
        cls = self.cls_token.expand(x.size(0), -1, -1)  # (B, 1, C)
        return torch.cat([cls, x], dim=1) + self.pos_embed  # (B, T+1, C)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images)  # (B, T+1, C)
        for block in self.blocks:
            x = block(x)  # (B, T+1, C)
        return self.head(self.norm(x[:, 0]))  # (B, n_classes): read from the class token only

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's attention weights (B, H, T+1, T+1); token 0 is the class token."""
        with recording(block.attn for block in self.blocks) as maps:
            self(images)
        return maps


def load_digits_tensors(test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, no download), scaled to [0, 1]
    -> (train_images, train_labels, test_images, test_labels), images (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"load_digits_tensors(test_fraction={test_fraction}): expected a fraction in (0, 1).")
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    labels = torch.tensor(data.target)  # (N,)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))  # (N,)
    n_test = int(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]
