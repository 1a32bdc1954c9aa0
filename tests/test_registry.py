"""The one Registry class, and every registered model's forward pass (shape, device, dtype)."""
import pytest
import torch

from smoothcert import AUGMENTATIONS, DATASETS, METHODS, MODELS, ArgumentError, Registry, create_model
from smoothcert.augment import Augmentation
from smoothcert.data import get_dataset
from smoothcert.methods import create_method

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_register_get_names_and_duplicates():
    reg: Registry = Registry("widget", "widget")

    @reg.register("b")
    def b():
        return "b"

    reg.add("a", 1)
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2
    assert reg.get("b") is b and reg.get("a") == 1 and "a" in reg and "c" not in reg
    with pytest.raises(ValueError, match="'a' is registered twice"):
        reg.add("a", 1)  # one rule: a name taken is an error, even for the same object
    with pytest.raises(ArgumentError, match=r"^widget: unknown widget 'c'; choose from a, b$") as e:
        reg.get("c")
    assert e.value.arg == "widget"
    assert reg.remove("a") == 1 and reg.names() == ["b"]


@pytest.mark.parametrize("lookup, arg", [
    (lambda: create_model("nope", 10), "arch"),
    (lambda: create_method("nope"), "method"),
    (lambda: get_dataset("nope"), "dataset"),
    (lambda: Augmentation("crop-flip+nope"), "augment"),
])
def test_unknown_names_are_argument_errors_naming_the_argument(lookup, arg):
    with pytest.raises(ArgumentError, match=f"^{arg}: unknown .*choose from") as e:
        lookup()
    assert e.value.arg == arg


def test_the_four_registries_hold_the_builtins():
    assert {"lenet", "digits_cnn", "cifar_resnet20", "cifar_resnet110", "resnet50", "wrn"} <= set(MODELS.names())
    assert {"gauss", "maxup-gauss", "maxup", "alps", "smoothadv"} <= set(METHODS.names())
    assert {"digits", "mnist", "cifar10", "synthetic"} <= set(DATASETS.names())
    assert {"gaussian", "crop-flip", "cutout", "cutmix", "mixup"} <= set(AUGMENTATIONS.names())


# small inputs that every family accepts (resnet50 pools adaptively; lenet needs side >= 16)
_SIDE = {"lenet": 16, "digits_cnn": 8}
_KWARGS = {"wrn": {"depth": 10, "width": 1}}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", [n for n in MODELS.names()  # image-to-image archs: tests/test_denoisers.py
                                  if not getattr(MODELS.get(n), "pixel_space", False)])
def test_every_registered_model_forward_shape_device_dtype(name, device):
    side = _SIDE.get(name, 32)
    in_channels = 1 if name in ("lenet", "digits_cnn") else 3
    model = create_model(name, num_classes=7, in_channels=in_channels, input_size=side, **_KWARGS.get(name, {}))
    model = model.to(device).eval()
    x = torch.rand(2, in_channels, side, side, device=device)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7)
    assert out.device.type == device and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    with torch.no_grad():  # the whole model (normalisation layer included) follows .double()
        assert model.double()(x.double()).dtype == torch.float64
