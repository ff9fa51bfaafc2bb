"""The OpenAPI document as client generators read it: stable short operationIds, binary file
fields and answers, every error answer a problem, and examples that match their schemas."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from jsonschema import Draft202012Validator

from gateway_service import app as gateway_app
from gateway_service import openapi_document
from gateway_service.app import create_app
from gateway_service.problems import PROBLEM_MEDIA_TYPE
from gateway_service.settings import Settings

PROBLEM_SCHEMA = {"$ref": "#/components/schemas/ProblemDetails"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings(webapp_dir="")).openapi()


def test_the_routes_taken_as_the_apps_own_are_documented_as_include_router_would(
    document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def include(app: FastAPI, router: APIRouter) -> None:
        app.include_router(router)

    monkeypatch.setattr(gateway_app, "add_routes", include)
    included = create_app(Settings(webapp_dir="")).openapi()
    assert json.dumps(included, sort_keys=True) == json.dumps(document, sort_keys=True)


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    # OpenAPI 3.1 schemas are JSON Schema 2020-12; refs point into the document's components.
    return Draft202012Validator({**schema, "components": document["components"]})


def test_every_operation_has_its_id_from_the_table_and_ids_are_unique(document: dict[str, Any]) -> None:
    documented = {(method, path) for method, path, _ in operations(document)}
    assert documented == set(openapi_document.OPERATION_IDS), "give every route an operationId in OPERATION_IDS"
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))
    for method, path, operation in operations(document):
        assert operation["operationId"] == openapi_document.OPERATION_IDS[(method, path)]
    assert {"uploadImage", "listImages", "getImage", "deleteImage", "requestCode", "verifyCode"} <= set(ids)
    assert {"refreshToken", "logout", "getMe", "searchFaces", "downloadFile"} <= set(ids)


def test_file_fields_are_binary_strings(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["UploadImageForm"]["properties"]["file"]["format"] == "binary"
    assert schemas["SearchUpload"]["properties"]["file"]["format"] == "binary"
    assert "contentMediaType" not in json.dumps(document)
    upload = document["paths"]["/v1/images"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"] == {"$ref": "#/components/schemas/UploadImageForm"}
    assert not [name for name in schemas if name.startswith("Body_")]


def test_downloads_declare_binary_images(document: dict[str, Any]) -> None:
    content = document["paths"]["/v1/files/{token}"]["get"]["responses"]["200"]["content"]
    assert content == {
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
    }


def test_every_error_answer_is_a_problem_with_an_example(document: dict[str, Any]) -> None:
    problem = validator(document, PROBLEM_SCHEMA)
    for method, path, operation in operations(document):
        errors = {status: answer for status, answer in operation["responses"].items() if int(status) >= 400}
        if path.startswith("/v1/"):
            assert {"429", "500", "503"} <= set(errors), (method, path)
        for status, answer in errors.items():
            assert list(answer["content"]) == [PROBLEM_MEDIA_TYPE], (method, path, status)
            media = answer["content"][PROBLEM_MEDIA_TYPE]
            assert media["schema"] == PROBLEM_SCHEMA
            problem.validate(media["example"])
            assert media["example"]["status"] == int(status)
        if "429" in errors:
            assert "Retry-After" in errors["429"]["headers"]


def test_reasons_named_in_descriptions_become_the_examples_types(document: dict[str, Any]) -> None:
    search = document["paths"]["/v1/search"]["post"]["responses"]
    assert search["404"]["content"][PROBLEM_MEDIA_TYPE]["example"]["type"].endswith("/face-not-found")
    assert search["503"]["content"][PROBLEM_MEDIA_TYPE]["example"]["type"].endswith("/embedder-unavailable")


def test_examples_of_requests_and_answers_match_their_schemas(document: dict[str, Any]) -> None:
    requests = answers = 0
    for _, _, operation in operations(document):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body and "example" in body:
            validator(document, body["schema"]).validate(body["example"])
            requests += 1
        for status, answer in operation["responses"].items():
            media = answer.get("content", {}).get("application/json")
            if status.startswith("2") and media and "example" in media:
                validator(document, media["schema"]).validate(media["example"])
                answers += 1
    assert requests == len(openapi_document.REQUEST_EXAMPLES)
    assert answers == len(openapi_document.RESPONSE_EXAMPLES)


def test_fixing_twice_changes_nothing(document: dict[str, Any]) -> None:
    again = openapi_document.fix_document(copy.deepcopy(document))
    assert again == document


def test_schema_names_are_plain_class_names(document: dict[str, Any]) -> None:
    # FastAPI qualifies a name with its module when two models share it; generators then
    # refuse one of them ("duplicate models").
    assert [name for name in document["components"]["schemas"] if "__" in name] == []
