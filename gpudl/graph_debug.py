"""What ``CUDAGraph.debug_dump`` and ``CUDAGraph.get_graph_data`` show of a captured graph.

A CUDA graph (CuPy) is described by CUDA itself: ``cudaGraphDebugDotPrint`` writes its DOT file
and the graph's nodes and edges are read with cuda.bindings, as PyTorch's ``get_graph_data``
does. A graph recorded as a call list (the CPU path, Numba's simulator, gpudl.graph_recorder), or
a CUDA graph where CuPy has no DOT printer, is described by what was recorded: one node per
recorded call (kind, name, detail), in the order a replay runs them, each depending on the one
before, since a replay (like one captured stream) runs them one after another. The raw CUDA
handles (``raw_cuda_graph``, ``raw_cuda_graph_exec``) are CuPy's; the CPU path has none.
"""

import os

from . import backend

VERBOSE = 1         # cudaGraphDebugDotFlagsVerbose, the flags PyTorch's debug_dump passes


class Inspection:
    """torch.cuda.CUDAGraph's inspection methods, a base of gpudl's CUDAGraph (which holds
    ``_graph``: CuPy's Graph, ``_recording``: graph_recorder's Recording, ``_keep_graph``,
    ``_debug``, ``_dumpable``, ``_exec``, ``_exec_id`` and ``_nodes``)."""

    def _check_captured(self, where):
        if self._graph is None and self._recording is None:
            raise RuntimeError(f"CUDAGraph.{where}: nothing captured yet; fill the graph with "
                               "`with gd.cuda.graph(g): ...` first")

    def enable_debug_mode(self):
        """Keep what ``debug_dump`` writes: call it before the capture ends."""
        self._debug = True

    def debug_dump(self, debug_path):
        """Write the captured graph to ``debug_path`` as a DOT file (Graphviz). On the GPU it
        is CUDA's own description (cudaGraphDebugDotPrint, verbose, as PyTorch's) where CuPy has
        it (CuPy >= 14); on the CPU, or with an older CuPy, one node per call the capture
        recorded, in replay order. Needs debug mode enabled before the capture ended, or
        ``keep_graph=True``. (PyTorch only warns and writes nothing without them; here the
        call raises.)"""
        if not isinstance(debug_path, (str, os.PathLike)):
            raise TypeError(f"CUDAGraph.debug_dump: debug_path must be a str or os.PathLike, "
                            f"got {type(debug_path).__name__}")
        self._check_captured("debug_dump")
        if not self._dumpable:
            when = "enabled only after the capture" if self._debug else "not enabled"
            raise RuntimeError(
                f"CUDAGraph.debug_dump: debug mode was {when}, so the graph was not kept "
                "for a dump; call g.enable_debug_mode() before capturing (or make the graph "
                "with keep_graph=True)")
        runtime = backend._cupy.cuda.runtime if self._graph is not None else None
        if runtime is not None and hasattr(runtime, "graphDebugDotPrint"):
            runtime.graphDebugDotPrint(self._graph.graph, os.fspath(debug_path), VERBOSE)
            return
        write_dot(debug_path, self._describe(), "gpudl CUDAGraph")

    def _describe(self):
        return self._recording.describe() if self._recording is not None else self._nodes

    def raw_cuda_graph(self):
        """The cudaGraph_t, as an int (``keep_graph`` must be True). There is none on the CPU
        path, where the graph is a recorded call list: that raises."""
        self._check_cuda_handles("raw_cuda_graph")
        if not self._keep_graph:
            raise RuntimeError("CUDAGraph.raw_cuda_graph: the raw cudaGraph_t is only kept for "
                               "a CUDAGraph made with keep_graph=True")
        return int(self._graph.graph)

    def raw_cuda_graph_exec(self):
        """The cudaGraphExec_t, as an int, once instantiated (at the end of the capture, or by
        ``instantiate()`` with ``keep_graph``); a later ``instantiate()`` destroys it. There is
        none on the CPU path: that raises."""
        self._check_cuda_handles("raw_cuda_graph_exec")
        if self._exec_id is None:
            raise RuntimeError("CUDAGraph.raw_cuda_graph_exec: the graph has no cudaGraphExec_t "
                               "until instantiate() has been called")
        return int(self._exec.handle if self._exec is not None else self._graph.graphExec)

    def _check_cuda_handles(self, where):
        if self._recording is not None or (self._graph is None and backend._cupy is None):
            raise RuntimeError(
                f"CUDAGraph.{where}: there is no CUDA graph on the CPU path (this process runs "
                "without CuPy, on the CPU or Numba's simulator): the capture is a recorded call "
                "list; see it with debug_dump() or get_graph_data()")
        self._check_captured(where)

    def get_graph_data(self):
        """The graph's nodes and their dependencies, as PyTorch's ``get_graph_data``:
        ``{"exec_graph_id": int, "nodes": [{"index", "node_type", "tools_id", "graph_id",
        "node_id", "kernel_name", "dependencies", "dependents"}, ...]}``; ``keep_graph`` must be
        True and the graph instantiated. On the GPU the CUDA graph's nodes (needs cuda.bindings
        and a CUDA 13.1 driver, as PyTorch's); on the CPU the recorded calls, in replay order,
        each depending on the one before: ``node_type`` is the kind of call ("function",
        "backward", "method", "refill"), ``kernel_name`` its name, and a ``detail`` key gives its
        arrays; the ids number the instantiation and the call."""
        self._check_captured("get_graph_data")
        if not self._keep_graph:
            raise RuntimeError("CUDAGraph.get_graph_data: needs the raw graph, which is only "
                               "kept for a CUDAGraph made with keep_graph=True")
        if self._exec_id is None:
            raise RuntimeError("CUDAGraph.get_graph_data: call instantiate() first (the data "
                               "names the instantiated graph)")
        if self._recording is not None:
            return recorded_graph_data(self._describe(), self._exec_id)
        return cuda_graph_data(self.raw_cuda_graph(), self.raw_cuda_graph_exec())


# ------------------------------------------------------------------ descriptions of recorded calls
# (kind, name, detail) per call; graph_recorder's calls and cuda_graphs' GPU watcher make them.
def describe_forward(function, inputs, outputs):
    return ("function", function.__name__, f"{_values(inputs)} -> {_values(outputs)}")


def describe_backward(order, accumulations=None):
    first = f"{order[0].function.__name__}Backward" if order else "a leaf"
    counted = "" if accumulations is None else f", {accumulations} gradient accumulations"
    return ("backward", "backward", f"from {first} through {len(order)} nodes{counted}")


def describe_call(method, target):
    return ("method", method.__qualname__, f"on {type(target).__name__}")


def describe_refill(array):
    return ("refill", "refill", f"a constant {_array(array)} gets its first values back before "
            "an in-place edit")


def _values(values):
    return "(" + ", ".join(_value(v) for v in values) + ")"


def _value(value):
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return _array(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    return type(value).__name__


def _array(array):
    return f"{array.dtype}{list(array.shape)}"


def write_dot(path, nodes, title):
    """Write ``nodes`` ((kind, name, detail) in order) to ``path`` as a DOT digraph."""
    lines = [f"digraph {_quote(title)} {{",
             f"  label={_quote(f'{title}: {len(nodes)} recorded calls, replayed in order')};",
             "  node [shape=box, fontname=monospace];"]
    for i, (kind, name, detail) in enumerate(nodes):
        heading = name if name == kind else f"{kind} {name}"
        lines.append(f"  n{i} [label={_quote(f'{i}: {heading}' + chr(10) + detail)}];")
    lines += [f"  n{i} -> n{i + 1};" for i in range(len(nodes) - 1)]
    lines.append("}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def recorded_graph_data(nodes, exec_id):
    """PyTorch's ``get_graph_data`` structure for a recorded graph: ``exec_id`` numbers the
    instantiation (as CUDA's exec graph id), ``node_type`` is the kind of recorded call
    ("function", "backward", "method", "refill") and ``kernel_name`` its name."""
    data = []
    for i, (kind, name, detail) in enumerate(nodes):
        data.append({"index": i, "node_type": kind, "tools_id": (exec_id << 32) | i,
                     "graph_id": exec_id, "node_id": i, "kernel_name": name, "detail": detail,
                     "dependencies": [i - 1] if i else [],
                     "dependents": [i + 1] if i + 1 < len(nodes) else []})
    return {"exec_graph_id": exec_id, "nodes": data}


# ------------------------------------------------------------------ a CUDA graph (cuda.bindings)
def cuda_graph_data(raw_graph, raw_exec):
    """``get_graph_data`` of a CUDA graph, read with cuda.bindings as PyTorch does: node types,
    tools ids remapped to the exec graph's id (as CUPTI profilers report them), kernel names, and
    the dependency edges. Needs cuda.bindings and a driver with cudaGraphNodeGetToolsId (13.1)."""
    try:
        from cuda.bindings import driver, runtime
    except ImportError:
        raise RuntimeError("CUDAGraph.get_graph_data: needs the cuda.bindings package "
                           "(pip install cuda-bindings)") from None
    if not hasattr(runtime, "cudaGraphNodeGetToolsId"):
        raise RuntimeError("CUDAGraph.get_graph_data: needs cudaGraphNodeGetToolsId, which "
                           "cuda.bindings >= 13.1 and a CUDA 13.1 driver have")
    types = runtime.cudaGraphNodeType
    type_names = {getattr(types, "cudaGraphNodeType" + kind): name for kind, name in (
        ("Kernel", "kernel"), ("Memcpy", "memcpy"), ("Memset", "memset"), ("Host", "host"),
        ("Graph", "child_graph"), ("Empty", "empty"), ("WaitEvent", "wait_event"),
        ("EventRecord", "event_record"), ("MemAlloc", "mem_alloc"), ("MemFree", "mem_free"))}
    graph = runtime.cudaGraph_t(init_value=raw_graph)
    count = _ok(runtime.cudaGraphGetNodes(graph, numNodes=0))[1]
    handles = _ok(runtime.cudaGraphGetNodes(graph, numNodes=count))[0][:count]
    exec_id = _ok(runtime.cudaGraphExecGetId(runtime.cudaGraphExec_t(init_value=raw_exec)))
    index = {int(h): i for i, h in enumerate(handles)}
    nodes = []
    for i, handle in enumerate(handles):
        kind = _ok(runtime.cudaGraphNodeGetType(handle))
        node_id = _ok(runtime.cudaGraphNodeGetToolsId(handle)) & 0xFFFFFFFF
        nodes.append({"index": i, "node_type": type_names.get(kind, str(kind)),
                      "tools_id": (exec_id << 32) | node_id, "graph_id": exec_id,
                      "node_id": node_id, "kernel_name": _kernel_name(driver, handle, kind, types),
                      "dependencies": [], "dependents": []})
    edges = _ok(runtime.cudaGraphGetEdges(graph, numEdges=0))[-1]
    if edges:
        sources, targets = _ok(runtime.cudaGraphGetEdges(graph, numEdges=edges))[:2]
        for source, target in zip(sources[:edges], targets[:edges]):
            s, t = index.get(int(source)), index.get(int(target))
            if s is not None and t is not None:
                nodes[s]["dependents"].append(t)
                nodes[t]["dependencies"].append(s)
    return {"exec_graph_id": exec_id, "nodes": nodes}


def _kernel_name(driver, handle, kind, types):
    if kind != types.cudaGraphNodeTypeKernel:
        return None
    err, params = driver.cuGraphKernelNodeGetParams(driver.CUgraphNode(init_value=int(handle)))
    if err != driver.CUresult.CUDA_SUCCESS or not int(params.func):
        return None
    err, name = driver.cuFuncGetName(driver.CUfunction(init_value=int(params.func)))
    if err != driver.CUresult.CUDA_SUCCESS:
        return None
    return name.decode() if isinstance(name, bytes) else name


def _ok(result):
    """The values of a cuda.bindings call's (error, *values), raising on an error."""
    err, *values = result
    if int(err) != 0:
        raise RuntimeError(f"CUDAGraph.get_graph_data: {err!r}")
    return values[0] if len(values) == 1 else values
