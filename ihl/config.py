"""One validated config tree, loaded from YAML presets or files.

Every section forbids unknown keys, so a misspelt key is an error that names it
instead of a silently ignored setting.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

Backbone = Literal[
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "hrnet_w32", "hrnet_w48"
]
HeadType = Literal["ihl", "heatmap", "integral"]
DetectorArchitecture = Literal[
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "retinanet_resnet50_fpn_v2",
    "fcos_resnet50_fpn",
    "ssdlite320_mobilenet_v3_large",
    "fcos_small",
    "fasterrcnn_small",
    "retinanet_small",
]

Off = BeforeValidator(lambda value: "off" if value is False else value)
"""A bare ``off`` is False to YAML 1.1 readers (PyYAML, so ``--set`` and every file ihl
reads), while DVC and DVCLive write it unquoted (YAML 1.2, a string): both mean "off"."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    backbone: Backbone = "resnet50"
    pretrained: bool | str = False
    """False (random init), True (ImageNet weights from torchvision/timm), or a checkpoint path."""
    head: HeadType = "ihl"
    num_joints: int = Field(17, gt=0)
    input_size: tuple[int, int] = (192, 256)
    """Crop (width, height) in pixels."""
    deconv_layers: int = Field(3, ge=0)
    """Transposed convolutions before the 1x1 output layer (ResNet backbones; HRNet uses 0)."""
    deconv_channels: int = Field(256, gt=0)
    resnet_stages: int = Field(4, ge=2, le=4)
    """ResNet stages kept: 4 is the usual stride-32 backbone, 3 ends at layer3 (stride 16)."""
    beta: float = Field(1.0, gt=0)
    """Temperature on the maps; SIHN ignores it, the debias correction does not."""
    debias: bool = False
    debias_form: Literal["reference", "gu"] = "reference"
    """With debias on: "reference" is the authors' correction C/(C-1) * (mu - 1/(2C)), C the sum
    of exp(z) over the map; "gu" is Gu et al.'s, which removes a uniform background's pull
    toward the grid centre and uses beta."""

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.backbone.startswith("hrnet") and self.deconv_layers:
            raise ValueError("model.deconv_layers: HRNet heads are a 1x1 convolution, set it to 0")
        if self.backbone.startswith("hrnet") and self.resnet_stages != 4:
            raise ValueError("model.resnet_stages: applies to ResNet backbones only, not HRNet")
        if self.backbone.startswith("resnet") and self.deconv_layers > self.resnet_stages + 1:
            raise ValueError(
                f"model.deconv_layers: {self.deconv_layers} would make maps finer than the input "
                f"(a {self.resnet_stages}-stage ResNet has stride {2 ** (self.resnet_stages + 1)})"
            )
        if any(s % 32 for s in self.input_size):
            raise ValueError(f"model.input_size: {self.input_size} must be multiples of 32")
        return self

    @property
    def stride(self) -> int:
        if self.backbone.startswith("hrnet"):
            return 4
        return 2 ** (self.resnet_stages + 1 - self.deconv_layers)

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """Output map (width, height)."""
        return (self.input_size[0] // self.stride, self.input_size[1] // self.stride)


class LossConfig(_Section):
    flow_per_axis: bool = True
    """Count -log G(e) once per axis as the reference does (True) or once per joint."""
    wasserstein: Literal["exact", "sinkhorn", "none"] = "exact"
    """"sinkhorn": the reference's term, geomloss' Sinkhorn divergence between each sample's
    joints as points (a joint is its concatenated x and y marginals, zeroed when invisible);
    "exact": the closed-form 1-D W1 of each visible joint's marginals (docs/fidelity.md)."""
    wasserstein_weight: float = Field(1.0, ge=0)
    lambda_t: int = -1
    """Drop the Wasserstein term from the 0-based epoch lambda_t on, when positive; zero or
    negative keeps it for the whole run (the reference's rule)."""
    flow_init: Literal["reference", "rle"] = "reference"
    """The flow's starting weights: "reference" is what the reference's head init leaves (Linear
    weights N(0, 0.01), biases 0: within ~1e-4 of the identity map); "rle" is RLE's own init
    (Xavier weights with gain 0.01 and PyTorch's default biases, a fixed shift of up to 0.125)."""
    heatmap_sigma: float = Field(2.0, gt=0)
    """Gaussian target sigma in heatmap pixels (Wasserstein target, heatmap baseline)."""


class TestConfig(_Section):
    flip: bool = True
    flip_shift: bool = True
    """Move the mirrored x one input pixel left (one map pixel for the heatmap head), as the
    reference does; a switch, so checkpoints' 1.0 and 0.0 read as on and off."""
    keypoint_score: Literal["reference", "sigma"] = "reference"
    sigma_score_tolerance: float = Field(0.02, gt=0)
    """Tolerance (fraction of the crop) of the sigma-derived keypoint score."""


class TrainConfig(_Section):
    epochs: int = Field(210, gt=0)
    batch_size: int = Field(64, gt=0)
    """Per device."""
    lr: float = Field(5e-4, gt=0)
    base_batch_size: int = Field(512, gt=0)
    """lr is given for this global batch and scaled linearly to the real one."""
    scale_lr: bool = False
    """Off in the paper presets: the reference declares a base batch but trains at lr whatever the
    number of GPUs (MMEngine scales only when asked to at launch)."""
    warmup_iters: int = Field(500, ge=0)
    warmup_ratio: float = Field(0.001, gt=0, le=1)
    lr_steps: tuple[int, ...] = (170, 200)
    lr_factor: float = Field(0.1, gt=0)
    seed: int = 0
    init_from: str | None = None
    """An IHL checkpoint (e.g. from `ihl import-checkpoint`) whose model weights, and flow
    weights when it holds them, start the run: fine-tuning a released model."""
    val_interval: int = Field(10, gt=0)
    """Validate every this many epochs, and always after the last one."""
    checkpoint_interval_iters: int = Field(0, ge=0)
    """Also save latest.pt every this many iterations (0: at epoch ends only); long epochs on
    preemptible nodes then lose at most this much work."""
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    """DataLoader worker processes per device; "auto": the CPUs this process may use (cgroup
    quota, affinity) shared between the node's ranks, one each kept for the rank itself."""
    amp: Annotated[Literal["off", "bf16", "fp16"], Off] = "off"
    """Mixed precision: bf16 on CUDA and on CPUs with bf16 instructions (AVX512-BF16, AMX, Arm
    BF16; other CPUs would emulate it many times slower, so they train in float32), fp16 with a
    GradScaler on CUDA only (float32 on CPU)."""
    channels_last: bool = False
    """NHWC memory format: faster convolutions on tensor-core GPUs."""
    compile: bool = False
    """``torch.compile`` the training step (forward under autocast and the loss; AOTAutograd
    builds its backward); validation and checkpoints use the plain model. Off in the paper
    presets; the first step waits for the compiler (minutes on a CPU)."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    """Inductor's mode: "reduce-overhead" adds CUDA graphs, "max-autotune" also tunes kernels
    (a much longer first step)."""
    compile_backend: Literal["inductor", "aot_eager"] = "inductor"
    """"inductor" generates kernels (the speed-up); "aot_eager" traces forward and backward the
    same way but runs them op by op: a quick check that the step compiles, for tests and
    debugging, not for speed."""

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.compile_mode != "default" and self.compile_backend != "inductor":
            raise ValueError(
                f"train.compile_mode: {self.compile_mode!r} is an inductor mode; "
                f"compile_backend {self.compile_backend!r} takes only 'default'"
            )
        return self


class DataConfig(_Section):
    dataset: Literal["coco", "mpii", "crowdpose"] = "coco"
    root: str = "data/coco"
    detections: str = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"
    """Validation person boxes (COCO, CrowdPose), relative to root; ground-truth boxes when it is
    absent."""
    rotation_factor: float = Field(80.0, ge=0)
    """Training augmentation (ihl-method.md section 6): rotation limit in degrees."""
    scale_range: tuple[float, float] = (0.5, 1.5)
    """Training augmentation: range of the random box scale factor."""
    half_body_prob: float = Field(0.3, ge=0, le=1)
    """Training augmentation: chance of cropping to the upper or lower body."""
    shift_prob: float = Field(0.3, ge=0, le=1)
    """Training augmentation: chance of moving the box centre (up to 0.16 of its size)."""
    flip_prob: float = Field(0.5, ge=0, le=1)
    """Training augmentation: chance of a horizontal flip (left and right joints swapped). Zero for
    data whose sides differ by appearance, as the synthetic figures' do: a mirrored figure keeps
    its colours, so a flip would teach that colour says nothing about the side."""
    decode: Literal["cpu", "device"] = "cpu"
    """Where training images are decoded and warped to their crops: "cpu" in the loader
    workers (OpenCV), "device" in the training process on its device (nvJPEG on CUDA through
    torchvision, warp with grid_sample; the workers only read files and draw the
    augmentation). Same crops up to interpolation rounding; evaluation always decodes on the
    CPU. docs/benchmarks.md has the measured rates."""


class DetectorConfig(_Section):
    """The person detector that gives the pose model its boxes when a request has none.

    ``docs/inference.md`` has the measurements behind the choices.
    """

    architecture: DetectorArchitecture = "fasterrcnn_mobilenet_v3_large_fpn"
    """A torchvision detection model; the ``*_small`` ones (a ResNet-18 up to layer3 with a
    64-channel FPN) are for training from scratch on the synthetic set."""
    weights: str | None = "DEFAULT"
    """A torchvision weights-API name for the architecture (``DEFAULT``, ``COCO_V1`` or the full
    ``FCOS_ResNet50_FPN_Weights.COCO_V1``: COCO-trained, person class used), a detector file
    written by ``ihl detector train``, or null for random initialisation (to be trained)."""
    score_threshold: float = Field(0.5, ge=0, le=1)
    """Persons scoring below this are dropped."""
    max_persons: int = Field(20, gt=0)
    """At most this many persons per image, highest scores first."""
    nms_iou: float = Field(0.5, gt=0, le=1)
    """Boxes overlapping a higher-scoring one by more than this IoU are dropped."""
    min_size: int = Field(800, gt=0)
    """Images are resized so that their short side is this (torchvision's ``min_size``)..."""
    max_size: int = Field(1333, gt=0)
    """...and their long side at most this."""
    epochs: int = Field(12, gt=0)
    """Training (``ihl detector train``, from scratch or fine-tuning): epochs over the train
    split's person boxes."""
    batch_size: int = Field(8, gt=0)
    lr: float = Field(1e-3, gt=0)
    """AdamW learning rate, dropped x0.1 for the last epoch."""
    amp: Annotated[Literal["off", "bf16"], Off] = "off"
    """Training under bf16 autocast where the CPU has bf16 instructions (as ``train.amp``;
    float32 elsewhere); detection itself runs in float32."""

    @model_validator(mode="after")
    def _check(self) -> DetectorConfig:
        if self.max_size < self.min_size:
            raise ValueError(f"detector.max_size: {self.max_size} < min_size {self.min_size}")
        return self


class Config(_Section):
    name: str = "custom"
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    test: TestConfig = TestConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    detector: DetectorConfig = DetectorConfig()


class ConfigError(ValueError):
    """A config that does not validate; the message names each bad key."""


def _format(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None


def preset_names() -> list[str]:
    return sorted(
        p.name[:-5] for p in resources.files("ihl.presets").iterdir() if p.name.endswith(".yaml")
    )


def load(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load a preset by name or a YAML file by path, then apply dotted-key overrides."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text, source = path.read_text(), str(path)
    else:
        preset = resources.files("ihl.presets") / f"{name_or_path}.yaml"
        if not preset.is_file():
            raise ConfigError(
                f"unknown preset {name_or_path!r}; presets: {', '.join(preset_names())}"
            )
        text, source = preset.read_text(), f"preset {name_or_path}"
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"invalid override {dotted}: {key} is not a section")
        node[leaf] = value
    return from_dict(data, source)


def resolve(
    preset: str | Path,
    overrides: dict[str, Any] | None = None,
    *,
    dataset: str | None = None,
    data_root: str | Path | None = None,
) -> Config:
    """The one way a run's choices become its config, whichever way it is started (``ihl
    train``, the DVC stages, the Kubeflow components, the PyTorchJob).

    ``preset`` (a name or a YAML file) is taken as it is; ``dataset`` (``synth``, ``coco``,
    ``mpii`` or ``crowdpose``) then sets ``data.dataset`` and ``model.num_joints``,
    ``data_root`` sets ``data.root``, and ``overrides`` (dotted keys) change the rest. An
    override of a key that ``dataset`` or ``data_root`` sets is refused: it would be lost.
    """
    fixed: dict[str, Any] = {}
    if dataset is not None:
        from ihl.data.errors import DatasetError
        from ihl.data.keypoints import get_spec
        from ihl.prepare import layout

        try:
            kind = layout(dataset)
        except DatasetError as err:
            raise ConfigError(f"dataset: {err}") from None
        fixed |= {"data.dataset": kind, "model.num_joints": get_spec(kind).num_joints}
    if data_root is not None:
        fixed["data.root"] = str(data_root)
    clash = sorted(set(fixed) & set(overrides or {}))
    if clash:
        raise ConfigError(
            f"{', '.join(clash)}: set by the run's dataset and data folder, not by an override"
        )
    return load(preset, {**(overrides or {}), **fixed})


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: nested sections as dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def effective_lr(cfg: Config, world_size: int = 1) -> float:
    """The learning rate the optimizer starts from (before warm-up) on ``world_size`` devices."""
    if world_size < 1:
        raise ConfigError(f"world size {world_size}: must be at least 1")
    train = cfg.train
    if not train.scale_lr:
        return train.lr
    return train.lr * train.batch_size * world_size / train.base_batch_size


def to_dict(cfg: Config) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def resolved(cfg: Config, world_size: int = 1) -> dict[str, Any]:
    """The config as ``ihl config show`` prints it: every key, plus ``effective_lr``."""
    return {**to_dict(cfg), "effective_lr": effective_lr(cfg, world_size)}
