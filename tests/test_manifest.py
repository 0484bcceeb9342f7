"""manifest.csv: one format for extract, augment and simulate, read by data, files and the report."""

from pathlib import Path

import pytest
from PIL import Image

from graspcheck.console import GraspcheckError
from graspcheck.data import read_manifest
from graspcheck.manifest import (AUGMENTED_COLUMNS, BASE_COLUMNS, EXTRACTED_COLUMNS, SIMULATED_COLUMNS, Manifest,
                                 listed_in_manifest, read_attributes)


def test_every_writer_declares_the_base_columns_first_and_each_column_once():
    for columns in (EXTRACTED_COLUMNS, AUGMENTED_COLUMNS, SIMULATED_COLUMNS):
        assert columns[:3] == BASE_COLUMNS == ("path", "label", "episode")
        assert len(set(columns)) == len(columns)


def test_a_folder_without_a_manifest_reads_as_empty(tmp_path):
    manifest = Manifest.read(tmp_path)
    assert manifest.rows == {} and manifest.columns == list(BASE_COLUMNS)
    assert read_attributes(tmp_path) == {} and read_manifest(tmp_path) == {}


def test_add_keeps_listed_rows_and_other_tools_columns(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label,episode,parent\nsuccess/a.png,success,E1,orig.png\n")
    manifest = Manifest.read(tmp_path, EXTRACTED_COLUMNS)
    assert manifest.columns == [*EXTRACTED_COLUMNS, "parent"]
    manifest.add([{"path": "success/a.png", "label": "success", "episode": "other"},  # listed: its row stays
                  {"path": "success/b.png", "label": "success", "episode": "E2", "source": "v.mp4", "time": "0.100", "frame": 1}])
    assert (tmp_path / "manifest.csv").read_text().splitlines() == [
        "path,label,episode,source,time,frame,parent",
        "success/a.png,success,E1,,,,orig.png",
        "success/b.png,success,E2,v.mp4,0.100,1,",
    ]
    assert not list(tmp_path.glob(".*tmp*"))  # written through a temporary, which is gone


def test_adding_nothing_new_leaves_the_file_alone_but_a_new_manifest_is_written(tmp_path):
    Manifest.read(tmp_path).add([])
    assert (tmp_path / "manifest.csv").read_text() == "path,label,episode\n"
    (tmp_path / "manifest.csv").write_bytes(b"path,label,episode\nx.png,success,E\n")  # not as graspcheck writes it
    Manifest.read(tmp_path).add([{"path": "x.png", "label": "success", "episode": "F"}])
    assert (tmp_path / "manifest.csv").read_bytes() == b"path,label,episode\nx.png,success,E\n"


def test_a_row_with_an_undeclared_column_is_refused(tmp_path):
    with pytest.raises(ValueError, match="object"):
        Manifest(tmp_path, AUGMENTED_COLUMNS, [{"path": "a.png", "label": "success", "episode": "E", "object": "box"}]).write()
    assert not (tmp_path / "manifest.csv").exists()


def test_short_and_long_lines_read_and_write_back_as_empty_fields(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label,episode,source\na.png,success\nb.png,success,E,v.mp4,extra\n")
    manifest = Manifest.read(tmp_path)
    assert manifest.rows["a.png"] == {"path": "a.png", "label": "success", "episode": "", "source": ""}
    assert manifest.rows["b.png"] == {"path": "b.png", "label": "success", "episode": "E", "source": "v.mp4"}
    manifest.write()
    assert Manifest.read(tmp_path).rows == manifest.rows


def test_read_attributes_gives_the_other_columns_by_resolved_path(tmp_path):
    rows = [{"path": "success/ep000001_0.png", "label": "success", "episode": "ep000001", "frame": 0, "object": "box",
             "object_size": "0.0300 0.0250 0.0300", "object_mass": "0.120", "object_friction": "0.80", "closure": "0.900",
             "finger_strength": "1.50", "approach_offset": "0.0010 -0.0020 0.0030", "final_height": "0.1500",
             "max_height": "0.1600", "hand_contacts": 4, "touched": 1}]
    (tmp_path / "data").mkdir()
    Manifest(tmp_path / "data", SIMULATED_COLUMNS, rows).write()
    attributes = read_attributes(tmp_path / "data")
    image = (tmp_path / "data" / "success" / "ep000001_0.png").resolve()
    assert list(attributes) == [image]
    assert attributes[image]["object"] == "box" and attributes[image]["hand_contacts"] == "4"
    assert set(attributes[image]) == set(SIMULATED_COLUMNS) - set(BASE_COLUMNS)
    assert read_manifest(tmp_path / "data") == {image: "ep000001"}


def test_an_unreadable_manifest_is_one_error_naming_it(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,class\na.png,success\n")
    with pytest.raises(GraspcheckError, match="lacks the column"):
        read_attributes(tmp_path)
    with pytest.raises(GraspcheckError, match="path,label,episode"):
        read_manifest(tmp_path)


def test_listed_in_manifest_names_the_metadata_and_the_listed_images(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    Manifest(tmp_path, BASE_COLUMNS, [{"path": "success/a.png", "label": "success", "episode": "E"}]).write()
    ours = listed_in_manifest(tmp_path, ("manifest.csv", "samples.png"))
    assert ours(Path("success/a.png")) and ours(Path("samples.png")) and not ours(Path("a.png"))
    (tmp_path / "manifest.csv").write_text("file\nx\n")  # unreadable as a manifest: only the metadata are ours
    ours = listed_in_manifest(tmp_path, ("manifest.csv",))
    assert ours(Path("manifest.csv")) and not ours(Path("success/a.png"))
