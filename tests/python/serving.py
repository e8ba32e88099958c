"""What every Python node of the tests does around its handlers: serve unary methods of
one gRPC service on a loopback port the OS picks, with gRPC health and grpcio-reflection
(which speaks only grpc.reflection.v1alpha), print the port on the first line of stdout,
and serve until killed."""

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection


def serve(service, methods, pool):
    """`methods`: name -> (handler, request message class); `pool`: the descriptor pool
    reflection describes the service from."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=request.FromString,
            response_serializer=lambda reply: reply.SerializeToString())
        for name, (handle, request) in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    checks = health.HealthServicer()
    checks.set(service, health_pb2.HealthCheckResponse.SERVING)
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    names = (service, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=pool)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()
