"""PRODCLASS_DEVICE: which torch device it selects, the reason when CUDA is asked for and
absent, and that the CPU path of the epoch loop is the plain float32 one."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from prodclass.models.device import (
    DeviceUnavailableError,
    autocast,
    grad_scaler,
    resolve_device,
    to_device,
)
from prodclass.settings import Settings, get_settings


def test_cpu_is_the_cpu_whatever_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_takes_cuda_when_torch_finds_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_auto_falls_back_to_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_asked_without_cuda_fails_with_the_reason(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError) as error:
        resolve_device("cuda")
    message = str(error.value)
    assert "PRODCLASS_DEVICE=cuda" in message and "not available" in message
    # the installed build says which case it is: no CUDA in the build, or no usable GPU
    assert ("no CUDA support" in message) == (torch.version.cuda is None)
    assert "PRODCLASS_DEVICE=cpu or auto" in message


def test_an_unknown_device_is_refused_by_the_settings_and_the_helper():
    with pytest.raises(ValidationError, match="device"):
        Settings(device="gpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")


def test_the_setting_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("PRODCLASS_DEVICE", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    get_settings.cache_clear()
    try:
        assert get_settings().device == "cpu"
        assert resolve_device() == torch.device("cpu")  # None: the setting
    finally:
        get_settings.cache_clear()


def test_the_cpu_path_has_no_mixed_precision_no_scaling_and_no_copies():
    cpu = torch.device("cpu")
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    with autocast(cpu):
        y = layer(x)
    assert y.dtype == torch.float32
    scaler = grad_scaler(cpu)
    assert not scaler.is_enabled()
    loss = y.sum()
    assert scaler.scale(loss) is loss  # a pass-through: the plain float32 step
    batch = {"x": x, "n": 3}
    moved = to_device(batch, cpu)
    assert moved["x"] is x and moved["n"] == 3
