"""Would a custom OpenVINO operation doing both of the fusion layer's sums in one read pay?

    python bench/openvino_custom_op.py [--threads 2] [--rounds 10]
                                       [--out bench/results/openvino-custom-op.json]

The fusion layer reads each 64-channel map twice (``ReduceL1`` over the channels and over the
pixels, bench/reduction_bench.py). OpenVINO has no op computing both in one read, but it runs
user operations (``openvino.Op``, the Python face of its C++ extension interface). This builds
one (1, 64, 512, 640) bf16 map the way the network makes one (a convolution, tanh) and gives
it, in one graph, to the two ``ReduceL1`` nodes the engine uses, and in another to a user op
that computes both sums from one ``|x|`` (NumPy inside ``evaluate``: the cost of the op's body
is not the question). Both graphs are compiled as the engine compiles (bf16 hint, latency) and
timed interleaved; OpenVINO's per-node counters and runtime graph show what the plugin does
around the user op: the layout and precision it hands over, and the reorders that costs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from streamfuse.bench import machine_description  # noqa: E402

SHAPE = [1, 64, 512, 640]


def abs_sums_op():
    """The user op class: (B, C, H, W) -> (B, 1, H, W) channel sums and (B, C, 1, 1) pixel
    sums of ``|x|``, from one ``|x|``."""
    import openvino as ov

    class AbsSums(ov.Op):
        def __init__(self, inputs=None):
            super().__init__(self, inputs)
            if inputs:
                self.constructor_validate_and_infer_types()

        def validate_and_infer_types(self):
            batch, channels, height, width = self.get_input_partial_shape(0)
            dtype = self.get_input_element_type(0)
            self.set_output_type(0, dtype, ov.PartialShape([batch, 1, height, width]))
            self.set_output_type(1, dtype, ov.PartialShape([batch, channels, 1, 1]))

        def clone_with_new_inputs(self, new_inputs):
            return AbsSums(new_inputs)

        def get_type_info(self):
            return ov.DiscreteTypeInfo("AbsSums", "streamfuse_bench")

        def visit_attributes(self, visitor):
            return True

        def has_evaluate(self):
            return True

        def evaluate(self, outputs, inputs):
            magnitude = np.abs(inputs[0].data)
            outputs[0].data[:] = magnitude.sum(axis=1, keepdims=True)
            outputs[1].data[:] = magnitude.sum(axis=(2, 3), keepdims=True)
            return True

    return AbsSums


def graphs():
    """name -> OpenVINO model: a map made by a convolution and tanh, its two sums, and a second
    convolution reading the map (as the decoder reads the fused maps)."""
    import openvino as ov
    import openvino.opset13 as ops

    weights = np.random.default_rng(0).standard_normal((64, 64, 3, 3)).astype(np.float32) * 0.05
    models = {}
    for name in ("reduce_l1_twice", "user_op_one_read"):
        image = ops.parameter(SHAPE, ov.Type.f32)
        feature = ops.tanh(ops.convolution(image, ops.constant(weights), [1, 1], [1, 1],
                                           [1, 1], [1, 1]))
        if name == "reduce_l1_twice":
            sums = [ops.reduce_l1(feature, ops.constant(np.array(axes, np.int64)), True).output(0)
                    for axes in ([1], [2, 3])]
        else:
            op = abs_sums_op()([feature.output(0)])
            sums = [op.output(0), op.output(1)]
        consumer = ops.convolution(feature, ops.constant(weights), [1, 1], [1, 1], [1, 1], [1, 1])
        models[name] = ov.Model([*sums, consumer.output(0)], [image])
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path,
                        default=REPO_ROOT / "bench/results/openvino-custom-op.json")
    args = parser.parse_args()
    import openvino as ov

    torch.set_num_threads(args.threads)
    machine = machine_description(torch.device("cpu"))
    core = ov.Core()
    settings = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": args.threads, "PERF_COUNT": True}
    requests = {name: core.compile_model(model, "CPU", settings).create_infer_request()
                for name, model in graphs().items()}
    data = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    outputs = {}
    for name, request in requests.items():
        request.infer([data])
        outputs[name] = [np.array(request.get_output_tensor(i).data, np.float64) for i in range(2)]
    seconds = {name: [] for name in requests}
    nodes = {name: {} for name in requests}
    for _ in range(args.rounds):
        for name, request in requests.items():
            started = time.perf_counter()
            request.infer([data])
            seconds[name].append(time.perf_counter() - started)
            for node in request.profiling_info:
                key = f"{node.node_type} {node.exec_type} {node.node_name}"
                nodes[name].setdefault(key, []).append(node.real_time.total_seconds() * 1000)
    result = {"what": __doc__.splitlines()[0], "map": SHAPE, "threads": args.threads,
              "rounds": args.rounds, "graphs": {}}
    for name, request in requests.items():
        runtime = request.get_compiled_model().get_runtime_model()
        result["graphs"][name] = {
            "median_ms": round(float(np.median(seconds[name])) * 1000, 1),
            "ms_by_node": {key: round(float(np.median(times)), 2)
                           for key, times in nodes[name].items() if np.median(times) >= 0.1},
            "runtime_nodes": [
                f"{op.get_rt_info()['layerType'].astype(str)} "
                f"{op.get_rt_info()['outputLayouts'].astype(str)} "
                f"{op.get_rt_info()['outputPrecisions'].astype(str)} {op.get_friendly_name()}"
                for op in runtime.get_ordered_ops()],
        }
    # The sums agree (bf16 map, float32 sums): a sanity check that both graphs compute the same.
    result["largest_relative_difference_of_sums"] = max(
        float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-6)))
        for a, b in zip(outputs["reduce_l1_twice"], outputs["user_op_one_read"]))
    result["ratio_user_op_over_reduce_l1"] = round(float(np.median(
        np.asarray(seconds["user_op_one_read"]) / np.asarray(seconds["reduce_l1_twice"]))), 2)
    machine["load_average_end"] = list(os.getloadavg())
    result["machine"] = machine
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, graph in result["graphs"].items():
        print(f"{name:18s} {graph['median_ms']:7.1f} ms per call")
        for key, ms in sorted(graph["ms_by_node"].items(), key=lambda item: -item[1])[:6]:
            print(f"    {ms:7.2f} ms  {key}")
    print(f"user op / ReduceL1 graph: {result['ratio_user_op_over_reduce_l1']}x; sums differ by "
          f"at most {result['largest_relative_difference_of_sums']:.2e} (relative)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
