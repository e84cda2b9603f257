import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=[torch.complex64, torch.complex128], ids=["c64", "c128"])
def cdtype(request):
    return request.param
