"""oneDNN matmuls on the CPU (models/onednn_linear.py) compute ``F.linear``: outputs and every gradient, with the
F.linear fallback wherever oneDNN does not apply."""
import pytest
import torch
import torch.nn.functional as F

from models.onednn_linear import (_PACKED, BACKEND_ENV, OneDNNLinear, autocast_weight, cpu_matmul_backend, linear,
                                  matmul_backend, onednn_available, packed_weight, uses_onednn)
from utils.errors import UsageError

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this PyTorch build has no oneDNN linear op")


def _inputs(grad_x=True, grad_w=True, grad_b=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=g, dtype=dtype).requires_grad_(grad_x)
    w = torch.randn(24, 16, generator=g, dtype=dtype).requires_grad_(grad_w)
    b = torch.randn(24, generator=g, dtype=dtype).requires_grad_(grad_b)
    return x, w, b


@needs_onednn
def test_forward_equals_f_linear_with_and_without_bias():
    x, w, b = _inputs(False, False, False)
    torch.testing.assert_close(linear(x, w, b), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    assert linear(x, w, b).shape == (3, 5, 24)


@needs_onednn
@pytest.mark.parametrize("needs", [(True, True, True), (True, False, False), (False, True, True)])
def test_gradients_equal_f_linears(needs):
    ours, ref = _inputs(*needs), _inputs(*needs)
    upstream = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(1))
    (linear(*ours) * upstream).sum().backward()
    (F.linear(*ref) * upstream).sum().backward()
    for mine, theirs, need in zip(ours, ref, needs):
        if need:
            torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-5, atol=1e-5)
        else:
            assert mine.grad is None


@needs_onednn
@pytest.mark.filterwarnings("ignore:Input #.* requires gradient and is not a double")
def test_autograd_function_passes_gradcheck_in_its_own_precision():
    # gradcheck needs float64, which oneDNN's op does not take; check the formulas against finite differences in
    # float32 with a tolerance that suits it.
    x, w, b = (t.detach().requires_grad_() for t in _inputs())
    x2 = x.reshape(-1, 16).detach().requires_grad_()
    assert torch.autograd.gradcheck(OneDNNLinear.apply, (x2, w, b), eps=1e-2, atol=5e-2, rtol=1e-2)


@needs_onednn
def test_result_may_be_updated_in_place_under_autograd():
    x, w, b = _inputs()
    out = linear(x, w, b)
    out.mul_(2.0)
    out.sum().backward()
    torch.testing.assert_close(x.grad, 2 * w.detach().sum(0).expand(3, 5, 16), rtol=1e-5, atol=1e-5)


def test_other_dtypes_and_the_switch_fall_back_to_f_linear(monkeypatch):
    x, w, b = _inputs(False, False, False, dtype=torch.float64)
    assert not uses_onednn(x, w)
    assert torch.equal(linear(x, w, b), F.linear(x, w, b))
    x, w, b = _inputs(False, False, False)
    monkeypatch.setenv(BACKEND_ENV, "blas")
    assert cpu_matmul_backend() == "blas" and not uses_onednn(x, w)
    assert torch.equal(linear(x, w, b), F.linear(x, w, b))


def test_a_bad_backend_name_is_a_one_line_usage_error(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "mkl")
    with pytest.raises(UsageError, match="CLIP_VG_CPU_MATMUL='mkl': expected one of onednn, blas"):
        cpu_matmul_backend()


@needs_onednn
def test_autocast_leaves_the_matmuls_to_autocast():
    x, w, b = _inputs(False, False, False)
    assert uses_onednn(x, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uses_onednn(x, w)
        assert linear(x, w, b).dtype == torch.bfloat16


@needs_onednn
def test_frozen_weights_give_bitwise_the_same_input_gradient_packed_or_not():
    x, w, b = _inputs(True, False, False)
    upstream = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(1))
    (linear(x, w, b) * upstream).sum().backward()
    packed = packed_weight(w, transposed=True)
    assert packed.is_mkldnn and packed_weight(w, transposed=True) is packed
    plain = torch.ops.mkldnn._linear_pointwise(upstream.reshape(-1, 24), w.t(), None, "none", [], "")
    assert torch.equal(x.grad.reshape(-1, 16), plain)


@needs_onednn
def test_frozen_weights_are_packed_once_and_repacked_after_a_change():
    x, w, b = _inputs(False, False, False)
    first = packed_weight(w)
    assert first.is_mkldnn and packed_weight(w) is first
    assert torch.equal(linear(x, w, b), torch.ops.mkldnn._linear_pointwise(x.contiguous(), w, b, "none", [], ""))
    with torch.no_grad():
        w.mul_(-1.0)  # e.g. load_state_dict copying new values in place
    assert packed_weight(w) is not first
    torch.testing.assert_close(linear(x, w, b), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    trainable = w.detach().clone().requires_grad_()
    assert packed_weight(trainable) is trainable


@needs_onednn
def test_packed_copies_go_with_their_weights():
    _, w, _ = _inputs(False, False, False)
    before = len(_PACKED)
    packed_weight(w)
    assert len(_PACKED) == before + 1
    del w
    assert len(_PACKED) == before


def test_under_torch_compile_the_matmuls_are_left_to_the_compiler(monkeypatch):
    """Inductor cannot lower oneDNN's op on a weight that is not a graph constant: compiled code uses F.linear."""
    x, w, b = _inputs(False, False, False)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not uses_onednn(x, w)
    assert torch.equal(linear(x, w, b), F.linear(x, w, b))


def test_under_autocast_frozen_weights_are_cast_once_with_autocasts_values():
    x, w, b = _inputs(False, False, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = autocast_weight(w)
        assert cast.dtype == torch.bfloat16 and autocast_weight(w) is cast
        assert torch.equal(linear(x, w, b), F.linear(x, w, b))
    assert autocast_weight(w) is w  # outside autocast: the weight itself
    trainable = w.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_weight(trainable) is trainable  # autocast caches trainable leaves itself


def test_a_scoped_backend_holds_inside_its_block_and_thread_only():
    import threading

    x, w, b = torch.randn(5, 16), torch.randn(8, 16), torch.randn(8)
    seen = []
    with matmul_backend("blas"):
        assert cpu_matmul_backend() == "blas"
        assert torch.equal(linear(x, w, b), F.linear(x, w, b))  # the BLAS product itself, bit for bit
        other = threading.Thread(target=lambda: seen.append(cpu_matmul_backend()))
        other.start()
        other.join()
    assert seen == ["onednn"] and cpu_matmul_backend() == "onednn"
    with pytest.raises(ValueError, match="matmul backend 'mkl'"):
        with matmul_backend("mkl"):
            pass
