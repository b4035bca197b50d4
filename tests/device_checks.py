"""Where a refused call raises on each device: on the cpu at the call; on the cuda device a
check that needs the device's data (an index range, a probability range, an integer divisor)
is queued by ``backend.defer_check`` and raises at the next device read."""

import gpudl as gd
from gpudl import backend


def call_then_read(call, *args, **kwargs):
    """``call(*args, **kwargs)``, then, if it queued device-side checks, a device read
    (``gd.cuda.synchronize``) that raises the first failed one. Inside ``pytest.raises`` the
    error is thus expected where it comes on each device; on the cpu nothing is queued and
    nothing read, so the call itself must raise (a check that failed to raise there still
    fails the test). Under the simulator NumPy stands for CuPy and may raise its own error
    where CuPy goes on (an out-of-range index, which CuPy wraps): a failed queued check is
    raised in its place, as a GPU would report it. A call refused at once for another reason
    must leave no check queued (a refused call changes nothing): checks left behind that all
    pass fail with an AssertionError."""
    try:
        result = call(*args, **kwargs)
    except Exception as refusal:
        if backend._deferred:
            left = len(backend._deferred)
            gd.cuda.synchronize()
            raise AssertionError(f"a call refused at once ({type(refusal).__name__}: "
                                 f"{refusal}) left {left} passing device-side check(s) "
                                 "queued") from refusal
        raise
    if backend._deferred:
        gd.cuda.synchronize()
    return result



def replayed_losses(model, opt, data, loss_fn, warmup=0):
    """torch's whole-step recipe on ``data`` ((x, y) pairs): ``warmup`` eager steps on a side
    stream, one step (``loss_fn(model(x), y)``, backward, ``opt.step()``) captured by
    ``gd.cuda.graph`` on static copies of the batch, then each later batch copied in and the
    graph replayed. The losses of every step, as NumPy values."""
    static_x, static_y = data[0][0].clone(), data[0][1].clone()
    losses = []
    side = gd.cuda.Stream()
    side.wait_stream(gd.cuda.current_stream())
    with gd.cuda.stream(side):
        for x, y in data[:warmup]:
            static_x.copy_(x)
            static_y.copy_(y)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(static_x), static_y)
            loss.backward()
            opt.step()
            losses.append(loss.numpy().copy())
    gd.cuda.current_stream().wait_stream(side)
    graph = gd.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with gd.cuda.graph(graph):
        static_loss = loss_fn(model(static_x), static_y)
        static_loss.backward()
        opt.step()
    for x, y in data[warmup:]:
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        losses.append(static_loss.numpy().copy())
    return losses
