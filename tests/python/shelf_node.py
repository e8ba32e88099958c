"""A gRPC node written in Python with grpcio and nothing of rust-ms: `shelf.v1.Shelf`,
its messages built at run time from a descriptor (no generated code), gRPC health, and
the stock reflection of grpcio-reflection, which speaks only grpc.reflection.v1alpha.

Prints its port on the first line of stdout, then serves until killed.
"""

from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

FIELD = descriptor_pb2.FieldDescriptorProto


def shelf_file():
    file = descriptor_pb2.FileDescriptorProto(
        name="shelf/v1/shelf.proto", package="shelf.v1", syntax="proto3"
    )
    book = file.message_type.add(name="Book")
    book.field.add(name="title", number=1, type=FIELD.TYPE_STRING,
                   label=FIELD.LABEL_OPTIONAL, json_name="title")
    book.field.add(name="pages", number=2, type=FIELD.TYPE_INT64,
                   label=FIELD.LABEL_OPTIONAL, json_name="pages")
    shelf = file.service.add(name="Shelf")
    shelf.method.add(name="Shout", input_type=".shelf.v1.Book", output_type=".shelf.v1.Book")
    return file


def main():
    pool = descriptor_pool.DescriptorPool()
    pool.Add(shelf_file())
    book = message_factory.GetMessageClass(pool.FindMessageTypeByName("shelf.v1.Book"))

    def shout(request, context):
        if not request.title:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a book needs a title")
        return book(title=request.title.upper(), pages=request.pages)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler("shelf.v1.Shelf", {
        "Shout": grpc.unary_unary_rpc_method_handler(
            shout, request_deserializer=book.FromString,
            response_serializer=book.SerializeToString),
    })
    server.add_generic_rpc_handlers((handler,))
    checks = health.HealthServicer()
    checks.set("shelf.v1.Shelf", health_pb2.HealthCheckResponse.SERVING)
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    names = ("shelf.v1.Shelf", health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=pool)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
