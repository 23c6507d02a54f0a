#!/usr/bin/env python3
"""A CSI v1 client for the tests, speaking to dnpipes-csi over its unix socket as kubelet does: Python's
grpcio with stubs generated from proto/csi.proto at the first call (cached in --cache).

    csi_client.py --socket PATH [--cache DIR] SERVICE.METHOD [JSON-REQUEST]

prints the response as JSON and exits 0, or prints "CODE message" (e.g. "INVALID_ARGUMENT volume_id is
missing") and exits 3. A METHOD given as /full.Service/Path is called with an empty request whatever its
type (to check that unserved methods are answered UNIMPLEMENTED).
"""
import argparse
import importlib
import json
import os
import sys

import grpc


def stubs(cache):
    proto_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
    os.makedirs(cache, exist_ok=True)
    if not os.path.exists(os.path.join(cache, "csi_pb2_grpc.py")):
        from grpc_tools import protoc
        import grpc_tools
        include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        status = protoc.main(["protoc", "-I", proto_dir, "-I", include, "--python_out", cache,
                              "--grpc_python_out", cache, os.path.join(proto_dir, "csi.proto")])
        if status != 0:
            sys.exit("cannot generate the CSI stubs")
    sys.path.insert(0, cache)
    return importlib.import_module("csi_pb2"), importlib.import_module("csi_pb2_grpc")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--cache", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "dnpipes-csi-stubs"))
    parser.add_argument("--timeout", type=float, default=90)
    parser.add_argument("method")
    parser.add_argument("request", nargs="?", default="{}")
    args = parser.parse_args()

    channel = grpc.insecure_channel("unix://" + args.socket)
    try:
        if args.method.startswith("/"):
            call = channel.unary_unary(args.method, request_serializer=lambda _: b"",
                                       response_deserializer=lambda b: b)
            call(None, timeout=args.timeout)
            print("{}")
            return 0
        from google.protobuf import json_format
        pb2, pb2_grpc = stubs(args.cache)
        service, method = args.method.split(".")
        stub = getattr(pb2_grpc, service + "Stub")(channel)
        request_type = getattr(pb2, method + "Request")
        request = json_format.ParseDict(json.loads(args.request), request_type())
        response = getattr(stub, method)(request, timeout=args.timeout)
        print(json.dumps(json_format.MessageToDict(response, preserving_proto_field_name=True), sort_keys=True))
        return 0
    except grpc.RpcError as error:
        print(f"{error.code().name} {error.details()}")
        return 3


if __name__ == "__main__":
    sys.exit(main())
