"""Drives Quern's Open Inference Protocol routes with NVIDIA's tritonclient (HTTP).

Run by tests/clients/oip.test.ts against a running API, worker and Redis. It takes a JSON job
as its argument ({"url", "key", "cases": [{"model", "input", "output", "rows"}]}) and prints one
line, `OIP-REPORT <json>`: what each client call returned (outputs as plain lists, errors as their messages), for
the test to compare with ONNX Runtime run directly. Every call goes through tritonclient's own
encoders and decoders: JSON and binary tensors, the sync client (infer and its greenlet-based
async_infer) and the asyncio client (tritonclient.http.aio).
"""

import asyncio
import json
import sys

import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException


def request_parts(module, case, binary):
    rows = np.asarray(case["rows"], dtype=np.float32)
    tensor = module.InferInput(case["input"], list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    wanted = module.InferRequestedOutput(case["output"], binary_data=binary)
    return [tensor], [wanted]


def as_list(result, case):
    return result.as_numpy(case["output"]).astype(np.float64).tolist()


def sync_checks(url, headers, cases):
    client = httpclient.InferenceServerClient(url=url, concurrency=4)
    out = {
        "server_live": client.is_server_live(headers=dict(headers)),
        "server_ready": client.is_server_ready(headers=dict(headers)),
        "server_metadata": client.get_server_metadata(headers=dict(headers)),
        "models": {},
        "infer": {},
        "errors": {},
    }
    for case in cases:
        model = case["model"]
        out["models"][model] = {
            "ready": client.is_model_ready(model, headers=dict(headers)),
            "metadata": client.get_model_metadata(model, headers=dict(headers)),
            "config": client.get_model_config(model, headers=dict(headers)),
        }
        for binary in (False, True):
            inputs, outputs = request_parts(httpclient, case, binary)
            result = client.infer(model, inputs, outputs=outputs, request_id=f"{model}-sync", headers=dict(headers))
            response = result.get_response()
            out["infer"][f"{model}/sync/{'binary' if binary else 'json'}"] = {
                "outputs": as_list(result, case),
                "id": response.get("id"),
                "model_version": response.get("model_version"),
            }
            inputs, outputs = request_parts(httpclient, case, binary)
            pending = client.async_infer(model, inputs, outputs=outputs, headers=dict(headers))
            out["infer"][f"{model}/async_infer/{'binary' if binary else 'json'}"] = {
                "outputs": as_list(pending.get_result(), case)
            }
        # Versioned paths too.
        inputs, outputs = request_parts(httpclient, case, True)
        result = client.infer(
            model, inputs, outputs=outputs, model_version=out["models"][model]["metadata"]["versions"][0], headers=dict(headers)
        )
        out["infer"][f"{model}/sync/versioned"] = {"outputs": as_list(result, case)}

    first = cases[0]
    bad_shape = np.zeros((1, len(first["rows"][0]) - 1), dtype=np.float32)
    bad_type = np.zeros((1, len(first["rows"][0])), dtype=np.float64)
    attempts = {
        "wrong_shape": lambda: client.infer(first["model"], [tensor_of(bad_shape, first["input"], "FP32")], headers=dict(headers)),
        "wrong_datatype": lambda: client.infer(first["model"], [tensor_of(bad_type, first["input"], "FP64")], headers=dict(headers)),
        "unknown_model": lambda: client.infer("no-such-model", [tensor_of(bad_shape, first["input"], "FP32")], headers=dict(headers)),
        "no_key": lambda: client.infer(first["model"], request_parts(httpclient, first, True)[0]),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
            out["errors"][name] = None
        except InferenceServerException as err:
            out["errors"][name] = {"status": err.status(), "message": err.message()}
    client.close()
    return out


def tensor_of(array, name, datatype):
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=False)
    return tensor


async def aio_checks(url, headers, cases):
    client = aioclient.InferenceServerClient(url=url)
    out = {"server_live": await client.is_server_live(headers=dict(headers)), "infer": {}}
    try:
        for case in cases:
            for binary in (False, True):
                inputs, outputs = request_parts(aioclient, case, binary)
                # Several at once: the asyncio client's calls share the sync path's jobs.
                results = await asyncio.gather(
                    *[client.infer(case["model"], inputs, outputs=outputs, headers=dict(headers)) for _ in range(4)]
                )
                out["infer"][f"{case['model']}/aio/{'binary' if binary else 'json'}"] = {
                    "outputs": [as_list(r, case) for r in results]
                }
    finally:
        await client.close()
    return out


# Each call gets its own copy of the headers: tritonclient adds Inference-Header-Content-Length to
# the dict it is given, which would follow into the next call.


def main():
    job = json.loads(sys.argv[1])
    headers = {"X-API-Key": job["key"]}
    report = {"sync": sync_checks(job["url"], headers, job["cases"])}
    report["aio"] = asyncio.run(aio_checks(job["url"], headers, job["cases"]))
    print("OIP-REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
