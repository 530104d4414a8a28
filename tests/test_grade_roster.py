"""The instructor's flow: grade a folder of submissions, get the JSON report and a CSV roster
(student, notebook, score, max_score, status, points per check)."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat

from course_lib.tools import repo_root
from course_lib.grade import expand, write_roster

ROOT = repo_root()



def read_roster(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_expand_names_students_by_folder_or_by_file(tmp_path):
    subs = tmp_path / "submissions"
    for rel in ("alice/01_attention.ipynb", "alice/.ipynb_checkpoints/01_attention-checkpoint.ipynb",
                "bob/02_positional_encodings.ipynb", "carol.ipynb"):
        (subs / rel).parent.mkdir(parents=True, exist_ok=True)
        (subs / rel).write_text("{}")
    single = tmp_path / "dave" / "01_attention.ipynb"
    single.parent.mkdir()
    found = [(p.relative_to(tmp_path).as_posix(), s) for p, s in expand([subs, single])]
    assert found == [("submissions/alice/01_attention.ipynb", "alice"),
                     ("submissions/bob/02_positional_encodings.ipynb", "bob"),
                     ("submissions/carol.ipynb", "carol"),
                     ("dave/01_attention.ipynb", "dave")]


def test_roster_has_one_column_per_check_and_blanks_where_a_notebook_lacks_it(tmp_path):
    rows = [
        {"student": "alice", "notebook": "01.ipynb", "status": "graded", "score": 3, "max_score": 4,
         "checks": [{"name": "check_softmax", "points": 2}, {"name": "check_causal_mask", "points": 1}]},
        {"student": "bob", "notebook": "02.ipynb", "status": "graded", "score": 0, "max_score": 2,
         "checks": [{"name": "check_rope", "points": 0}]},
        {"student": "carol", "notebook": "01.ipynb", "status": "could not execute: JSONDecodeError"},
    ]
    out = tmp_path / "roster.csv"
    write_roster(rows, out)
    header = out.read_text(encoding="utf-8").splitlines()[0]
    assert header == "student,notebook,score,max_score,status,check_softmax,check_causal_mask,check_rope"
    got = read_roster(out)
    assert got[0] == {"student": "alice", "notebook": "01.ipynb", "score": "3", "max_score": "4",
                      "status": "graded", "check_softmax": "2", "check_causal_mask": "1", "check_rope": ""}
    assert got[1]["check_rope"] == "0" and got[1]["check_softmax"] == ""
    assert got[2]["score"] == "" and got[2]["status"].startswith("could not execute")


def test_grading_a_folder_writes_json_and_roster(tmp_path):
    nb = nbformat.read(ROOT / "exercises" / "01_attention.ipynb", as_version=4)
    subs = tmp_path / "submissions"
    (subs / "bob").mkdir(parents=True)
    nbformat.write(nb, subs / "bob" / "01_attention.ipynb")  # bob hands in the untouched exercise
    for c in nb.cells:  # alice solves softmax only
        if "def softmax(" in c.source:  # part 1 (not part 5's softmax_backward)
            c.source = c.source.replace("# YOUR CODE HERE\n    raise NotImplementedError()",
                                        "e = (x - x.amax(dim, keepdim=True)).exp()\n    return e / e.sum(dim, keepdim=True)")
    (subs / "alice").mkdir()
    nbformat.write(nb, subs / "alice" / "01_attention.ipynb")
    (subs / "carol.ipynb").write_text("{ not json")  # carol's file is broken

    js, roster = tmp_path / "grades.json", tmp_path / "roster.csv"
    proc = subprocess.run([sys.executable, "-m", "course_lib.grade", str(subs), "--json", str(js),
                           "--csv", str(roster)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    print(proc.stdout[-2000:], proc.stderr[-2000:])
    assert proc.returncode == 1 and "carol.ipynb: could not execute" in proc.stderr  # a broken file is an error
    report = json.loads(js.read_text())
    assert [Path(n["path"]).parent.name for n in report["notebooks"]] == ["alice", "bob"]  # the JSON contract
    rows = {r["student"]: r for r in read_roster(roster)}
    assert set(rows) == {"alice", "bob", "carol"}
    checks = ["check_softmax", "check_scaled_dot_product_attention", "check_causal_mask",
              "check_multi_head_attention", "check_softmax_backward", "check_attention_backward",
              "check_attention_function"]
    assert list(rows["alice"])[5:] == checks
    assert rows["alice"]["check_softmax"] == "2" and rows["alice"]["score"] == "2"
    assert rows["alice"]["check_causal_mask"] == "0" and rows["alice"]["status"] == "graded"
    assert rows["bob"]["score"] == "0" and int(rows["bob"]["max_score"]) == report["notebooks"][1]["max_score"]
    assert rows["carol"]["score"] == "" and rows["carol"]["status"].startswith("could not execute")
