"""A gRPC node in Python with grpcio and nothing of rust-ms, whose methods carry
`google.api.http` annotations, the way grpc-gateway's documentation writes them: the
messages and the options are built at run time from descriptors (no generated code) and
served by grpcio-reflection (v1alpha only), with the annotation schema from
googleapis-common-protos.

Prints its port on the first line of stdout, then serves until killed.
"""

import grpc
from google.api import annotations_pb2  # puts google/api/*.proto in the pool
from google.protobuf import empty_pb2, field_mask_pb2  # noqa: F401 (the same for these)
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import serving

FIELD = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = FIELD.LABEL_OPTIONAL, FIELD.LABEL_REPEATED


def message(file, name, *fields):
    described = file.message_type.add(name=name)
    for number, (field_name, kind, label, type_name) in enumerate(fields, start=1):
        field = described.field.add(name=field_name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name


def method(service, name, request, reply, **rule):
    described = service.method.add(name=name, input_type=request, output_type=reply)
    http = described.options.Extensions[annotations_pb2.http]
    for key, value in rule.items():
        if key == "more":
            for extra in value:
                binding = http.additional_bindings.add()
                for extra_key, extra_value in extra.items():
                    setattr(binding, extra_key, extra_value)
        else:
            setattr(http, key, value)


def library_file():
    file = descriptor_pb2.FileDescriptorProto(
        name="library/v1/library.proto", package="library.v1", syntax="proto3",
        dependency=["google/api/annotations.proto", "google/protobuf/field_mask.proto",
                    "google/protobuf/empty.proto"])
    string, int32, boolean, nested = FIELD.TYPE_STRING, FIELD.TYPE_INT32, FIELD.TYPE_BOOL, FIELD.TYPE_MESSAGE
    message(file, "Book", ("name", string, OPTIONAL, None), ("title", string, OPTIONAL, None),
            ("author", string, OPTIONAL, None), ("tags", string, REPEATED, None))
    message(file, "GetBookRequest", ("name", string, OPTIONAL, None))
    message(file, "Filter", ("author", string, OPTIONAL, None), ("read", boolean, OPTIONAL, None))
    message(file, "ListBooksRequest", ("parent", string, OPTIONAL, None),
            ("page_size", int32, OPTIONAL, None), ("filter", nested, OPTIONAL, ".library.v1.Filter"),
            ("tags", string, REPEATED, None))
    message(file, "ListBooksResponse", ("books", nested, REPEATED, ".library.v1.Book"),
            ("next_page_token", string, OPTIONAL, None))
    message(file, "CreateBookRequest", ("parent", string, OPTIONAL, None),
            ("book", nested, OPTIONAL, ".library.v1.Book"))
    message(file, "UpdateBookRequest", ("book", nested, OPTIONAL, ".library.v1.Book"),
            ("update_mask", nested, OPTIONAL, ".google.protobuf.FieldMask"))
    message(file, "MoveBookRequest", ("name", string, OPTIONAL, None),
            ("other_shelf", string, OPTIONAL, None))
    library = file.service.add(name="Library")
    method(library, "GetBook", ".library.v1.GetBookRequest", ".library.v1.Book",
           get="/v1/{name=shelves/*/books/*}")
    method(library, "ListBooks", ".library.v1.ListBooksRequest", ".library.v1.ListBooksResponse",
           get="/v1/{parent=shelves/*}/books", response_body="books",
           more=[{"get": "/v1/books"}])
    method(library, "CreateBook", ".library.v1.CreateBookRequest", ".library.v1.Book",
           post="/v1/{parent=shelves/*}/books", body="book")
    method(library, "UpdateBook", ".library.v1.UpdateBookRequest", ".library.v1.Book",
           patch="/v1/{book.name=shelves/*/books/*}", body="book")
    method(library, "MoveBook", ".library.v1.MoveBookRequest", ".library.v1.Book",
           post="/v1/{name=shelves/*/books/*}:move", body="*")
    method(library, "DeleteBook", ".library.v1.GetBookRequest", ".google.protobuf.Empty",
           delete="/v1/{name=shelves/*/books/*}")
    return file


def main():
    pool = descriptor_pool.Default()
    pool.Add(library_file())
    types = {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
             for name in ["library.v1.Book", "library.v1.GetBookRequest",
                          "library.v1.ListBooksRequest", "library.v1.ListBooksResponse",
                          "library.v1.CreateBookRequest", "library.v1.UpdateBookRequest",
                          "library.v1.MoveBookRequest", "google.protobuf.Empty"]}
    book = types["library.v1.Book"]

    def get_book(request, context):
        if request.name.endswith("/books/missing"):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no book {request.name}")
        return book(name=request.name, title="Dune")

    def list_books(request, context):
        count = request.page_size or 2
        return types["library.v1.ListBooksResponse"](
            books=[book(name=f"{request.parent}/books/{i}", author=request.filter.author,
                        tags=list(request.tags)) for i in range(count)],
            next_page_token="more")

    def create_book(request, context):
        return book(name=f"{request.parent}/books/new", title=request.book.title,
                    author=request.book.author)

    def update_book(request, context):
        # The reply says which fields the update was asked to change.
        return book(name=request.book.name, title=",".join(request.update_mask.paths))

    def move_book(request, context):
        return book(name=request.name.replace(request.name.split("/books/")[0],
                                              request.other_shelf))

    def delete_book(request, context):
        return types["google.protobuf.Empty"]()

    handlers = {
        "GetBook": (get_book, "library.v1.GetBookRequest"),
        "ListBooks": (list_books, "library.v1.ListBooksRequest"),
        "CreateBook": (create_book, "library.v1.CreateBookRequest"),
        "UpdateBook": (update_book, "library.v1.UpdateBookRequest"),
        "MoveBook": (move_book, "library.v1.MoveBookRequest"),
        "DeleteBook": (delete_book, "library.v1.GetBookRequest"),
    }
    serving.serve("library.v1.Library", {
        name: (handle, types[request]) for name, (handle, request) in handlers.items()
    }, pool)

if __name__ == "__main__":
    main()
