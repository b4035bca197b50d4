"""What ``CUDAGraph.debug_dump`` and ``CUDAGraph.get_graph_data`` show of a captured graph.

A CUDA graph (CuPy) is described by CUDA itself: ``cudaGraphDebugDotPrint`` writes its DOT file
and the graph's nodes and edges are read with cuda.bindings, as PyTorch's ``get_graph_data``
does. A graph recorded as a call list (the CPU path, Numba's simulator, gpudl.graph_recorder), or
a CUDA graph where CuPy has no DOT printer, is described by what was recorded: one node per
recorded call (kind, name, detail), in the order a replay runs them, each depending on the one
before, since a replay (like one captured stream) runs them one after another.
"""

VERBOSE = 1         # cudaGraphDebugDotFlagsVerbose, the flags PyTorch's debug_dump passes


def write_dot(path, nodes, title):
    """Write ``nodes`` ((kind, name, detail) in order) to ``path`` as a DOT digraph."""
    lines = [f"digraph {_quote(title)} {{",
             f"  label={_quote(f'{title}: {len(nodes)} recorded calls, replayed in order')};",
             "  node [shape=box, fontname=monospace];"]
    for i, (kind, name, detail) in enumerate(nodes):
        lines.append(f"  n{i} [label={_quote(f'{i}: {kind} {name}' + chr(10) + detail)}];")
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
    type_names = {types.cudaGraphNodeTypeKernel: "kernel", types.cudaGraphNodeTypeMemcpy: "memcpy",
                  types.cudaGraphNodeTypeMemset: "memset", types.cudaGraphNodeTypeHost: "host",
                  types.cudaGraphNodeTypeGraph: "child_graph", types.cudaGraphNodeTypeEmpty: "empty",
                  types.cudaGraphNodeTypeWaitEvent: "wait_event",
                  types.cudaGraphNodeTypeEventRecord: "event_record",
                  types.cudaGraphNodeTypeMemAlloc: "mem_alloc",
                  types.cudaGraphNodeTypeMemFree: "mem_free"}
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
