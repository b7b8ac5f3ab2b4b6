"""The data sets API: upload, list, delete and share."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request

from nias.errors import BadUpload, NiasError

from backend import api_models as api
from backend.auth import current_user
from backend.datasets import DatasetNotFound, add_dataset, checked_name, jobs_naming, remove_dataset
from backend.jobs_api import check_quota, iso_time
from backend.openapi import describe
from backend.uploads import discard_body, received_file, stored_part

logger = logging.getLogger(__name__)

bp = Blueprint("datasets", __name__, url_prefix="/api/datasets")


def _nias():
    return current_app.extensions["nias"]


def dataset_to_json(dataset: dict, user_id: str) -> dict:
    store = _nias().store
    return {"name": dataset["name"], "owner": dataset.get("owner_email") or current_user()["email"],
            "size": dataset["size"], "sha256": dataset["sha256"], "filename": dataset["filename"],
            "is_zip": bool(dataset["is_zip"]), "created_at": iso_time(dataset["created_at"]),
            "jobs_using": len(jobs_naming(store, user_id, dataset)),
            "shared_with": store.dataset_shared_with(dataset["id"]) if dataset["owner_id"] == user_id else []}


@bp.post("")
@describe("Upload a data set", {201: api.Dataset, **api.REFUSED}, body=api.DatasetUpload,
          body_media="multipart/form-data", tag="datasets")
def upload_dataset():
    nias = _nias()
    user = current_user()
    try:
        check_quota(nias.store, nias.settings, user)
    except NiasError:
        discard_body(request)
        raise
    try:
        storage = received_file(request, nias.settings)
        name = checked_name(request.form.get("name"))
        if storage is None or not storage.filename:
            raise BadUpload("Attach the data in the form field 'file'.", code="missing_file")
        dataset = add_dataset(nias.store, nias.settings, user["id"], name, stored_part(storage), storage.filename)
    finally:
        request.discard_parts()
    logger.info("Data set %s of %s stored (%s, %d bytes)", name, user["id"], dataset["sha256"], dataset["size"])
    return jsonify(dataset_to_json(dataset, user["id"])), 201


@bp.get("")
@describe("My data sets and those shared with me", {200: api.DatasetList, **api.REFUSED}, tag="datasets")
def list_datasets():
    user_id = current_user()["id"]
    rows = _nias().store.visible_datasets(user_id)
    return jsonify({"datasets": [dataset_to_json(row, user_id) for row in rows]})


@bp.delete("/<name>")
@describe("Delete one of my data sets", {204: "deleted", **api.REFUSED}, tag="datasets")
def delete_dataset(name: str):
    remove_dataset(_nias().store, _nias().settings, current_user()["id"], name)
    return Response(status=204)


@bp.post("/<name>/share")
@describe("Share one of my data sets with another user", {200: api.Dataset, **api.REFUSED},
          body=api.DatasetShare, tag="datasets")
def share_dataset(name: str):
    store = _nias().store
    user_id = current_user()["id"]
    body = api.read_body(api.DatasetShare)
    dataset = store.get_dataset(user_id, name)
    if dataset is None:
        raise DatasetNotFound(f"You have no data set named {name!r}.")
    other = store.find_user(str(body.get("email") or "").strip().lower())
    if other is None:
        raise NiasError("No user has this email.", code="user_not_found", status=404)
    if other["id"] != user_id:
        store.share_dataset(dataset["id"], other["id"])
    return jsonify(dataset_to_json(dataset, user_id))
