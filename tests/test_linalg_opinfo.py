"""Sweep PyTorch's own OpInfo samples (op_db, float64, CPU) over gd.linalg and torch's linear
algebra names, as tests/test_opinfo_core.py sweeps the core ops (its helpers do the comparing:
outputs, and the gradients of (out * random weights).sum()). Samples outside gpudl's API and
deliberate departures are skipped with the reason below; error inputs must raise one of the
contract's exceptions."""

import pytest

import gpudl as gd

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")
core = pytest.importorskip("test_opinfo_core")


def _method(name):
    call = lambda x, *a, **k: getattr(x, name)(*a, **k)  # noqa: E731
    call.method_only = True
    return call


L = gd.linalg
GPUDL = {
    ("linalg.inv", ""): L.inv, ("linalg.inv_ex", ""): L.inv_ex, ("linalg.det", ""): L.det,
    ("linalg.slogdet", ""): L.slogdet, ("linalg.solve", ""): L.solve,
    ("linalg.solve_ex", ""): L.solve_ex, ("linalg.solve_triangular", ""): L.solve_triangular,
    ("linalg.cholesky", ""): L.cholesky, ("linalg.cholesky_ex", ""): L.cholesky_ex,
    ("linalg.qr", ""): L.qr, ("linalg.svd", ""): L.svd, ("linalg.svdvals", ""): L.svdvals,
    ("linalg.eigh", ""): L.eigh, ("linalg.eigvalsh", ""): L.eigvalsh,
    ("linalg.pinv", ""): L.pinv, ("linalg.pinv", "hermitian"): L.pinv,
    ("linalg.pinv", "singular"): lambda a, b: L.pinv(a @ b.mT),
    ("linalg.lstsq", ""): L.lstsq, ("linalg.lstsq", "grad_oriented"):
        lambda a, b, driver: L.lstsq(a, b, driver=driver)[:2],
    ("linalg.matrix_rank", ""): L.matrix_rank, ("linalg.matrix_rank", "hermitian"):
        L.matrix_rank,
    ("linalg.matrix_power", ""): L.matrix_power, ("linalg.multi_dot", ""): L.multi_dot,
    ("linalg.norm", ""): L.norm, ("linalg.norm", "subgradients_at_zero"): L.norm,
    ("linalg.matrix_norm", ""): L.matrix_norm, ("linalg.cond", ""): L.cond,
    ("linalg.vecdot", ""): L.vecdot, ("linalg.diagonal", ""): L.diagonal,
    ("linalg.tensorinv", ""): L.tensorinv, ("linalg.tensorsolve", ""): L.tensorsolve,
    ("linalg.vander", ""): L.vander, ("linalg.householder_product", ""): L.householder_product,
    ("linalg.lu", ""): L.lu, ("linalg.lu_factor", ""): L.lu_factor,
    ("linalg.lu_factor_ex", ""): L.lu_factor_ex, ("linalg.lu_solve", ""): L.lu_solve,
    ("matrix_exp", ""): L.matrix_exp,
    ("logdet", ""): gd.logdet, ("pinverse", ""): gd.pinverse,
    ("cholesky", ""): gd.cholesky, ("cholesky_solve", ""): gd.cholesky_solve,
    ("cholesky_inverse", ""): gd.cholesky_inverse, ("qr", ""): gd.qr, ("svd", ""): gd.svd,
    ("lu", ""): gd.lu, ("lu_solve", ""): gd.lu_solve, ("lu_unpack", ""): gd.lu_unpack,
    ("triangular_solve", ""): gd.triangular_solve, ("inner", ""): gd.inner,
    ("vdot", ""): gd.vdot, ("addmv", ""): gd.addmv, ("addr", ""): gd.addr,
    ("dist", ""): gd.dist, ("renorm", ""): gd.renorm,
    ("linalg.ldl_factor", ""): L.ldl_factor, ("linalg.ldl_factor_ex", ""): L.ldl_factor_ex,
    ("linalg.ldl_solve", ""): L.ldl_solve,
}
# samples outside gpudl's API (skipped, counted)
UNSUPPORTED_KWARGS = core.UNSUPPORTED_KWARGS - {"alpha"}
KNOWN = {}
OPS = sorted({k[0] for k in GPUDL})


@pytest.mark.parametrize("name", OPS)
def test_opinfo_samples(name):
    mismatches, compared, skipped = [], 0, 0
    for op in core._opinfos(name):
        key = (name, op.variant_test_name)
        samples = list(op.sample_inputs("cpu", torch.float64,
                                        requires_grad=op.supports_autograd))
        if key not in GPUDL:
            skipped += len(samples)
            continue
        core.OP_CALL[name] = op.op
        for i, sample in enumerate(samples):
            reason = (_unsupported(sample) or core._unsupported(sample, ("addmm", ""))
                      or KNOWN.get(key, lambda s: None)(sample))
            if reason:
                skipped += 1
                continue
            compared += 1
            problem = core._compare(name, sample, _processed(GPUDL[key], sample), i)
            if problem:
                mismatches.append(problem)
    print(f"{name}: compared {compared}, skipped {skipped}")
    assert compared > 0
    assert not mismatches, "\n".join(mismatches)


def _processed(fn, sample):
    """fn's output through the sample's output_process_fn_grad, as torch's output is (it keeps
    the outputs that are defined, e.g. |eigenvectors| or lstsq's solution)."""
    def call(*args, **kwargs):
        return sample.output_process_fn_grad(fn(*args, **kwargs))
    return call


def _unsupported(sample):
    refused = UNSUPPORTED_KWARGS & set(sample.kwargs)
    return f"kwargs {sorted(refused)}" if refused else None


@pytest.mark.parametrize("name", [n for n in OPS if any(
    op.error_inputs_func is not None for op in core._opinfos(n))])
def test_opinfo_error_inputs(name, monkeypatch):
    """Every bad input torch rejects, gpudl rejects too, with one of the contract's exceptions
    (LinAlgError is a RuntimeError): test_opinfo_core's check over this file's table."""
    monkeypatch.setattr(core, "GPUDL", GPUDL)
    core.test_opinfo_error_inputs(name)
