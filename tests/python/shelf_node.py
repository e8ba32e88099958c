"""A gRPC node written in Python with grpcio and nothing of rust-ms: `shelf.v1.Shelf`,
its messages built at run time from a descriptor (no generated code), gRPC health, and
the stock reflection of grpcio-reflection, which speaks only grpc.reflection.v1alpha.

Prints its port on the first line of stdout, then serves until killed.
"""

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import serving

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

    serving.serve("shelf.v1.Shelf", {"Shout": (shout, book)}, pool)

if __name__ == "__main__":
    main()
