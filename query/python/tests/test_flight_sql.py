"""Arrow Flight SQL from Python through ADBC (`adbc_driver_flightsql`, as a notebook would
connect to a shared server): `familiar serve --flight-sql` answers what `familiar.sql` answers
in process and what a scan of the documents gives, lists its tables, and refuses writes with an
exception in words.

Skipped with a message where the ADBC packages are missing, unless FAMILIAR_REQUIRE_ADBC is set
(CI installs them)."""

import os
import queue
import subprocess
import threading
from collections import Counter

import pytest

from conftest import familiar_bin

if os.environ.get("FAMILIAR_REQUIRE_ADBC"):
    import adbc_driver_flightsql.dbapi as flight_sql
    import adbc_driver_manager
else:
    flight_sql = pytest.importorskip(
        "adbc_driver_flightsql.dbapi",
        reason="needs adbc_driver_flightsql (pip install adbc_driver_flightsql)",
    )
    adbc_driver_manager = pytest.importorskip("adbc_driver_manager")

import familiar


@pytest.fixture(scope="module")
def server(index_dir, tmp_path_factory):
    """`familiar serve` with Flight SQL on a free port; yields its grpc:// URI. (Connections
    are made with autocommit on: the server has no transactions.)"""
    proc = subprocess.Popen(
        [
            familiar_bin(), "serve",
            "--index", f"fx={index_dir}",
            "--addr", "127.0.0.1:0",
            "--flight-sql", "127.0.0.1:0",
            "--sql-rows", "7",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stderr], daemon=True).start()
    uri, seen = None, []
    try:
        while True:
            line = lines.get(timeout=60)
            seen.append(line)
            if line.startswith("familiar serve: Flight SQL on "):
                uri = line.split(" on ", 1)[1].strip()
            if line.startswith("familiar serve: listening on"):
                break
        assert uri and uri.startswith("grpc://"), seen
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_adbc_reads_the_documents_as_familiar_sql_and_a_scan_do(server, index_dir):
    index = familiar.Index(index_dir)
    by_source = Counter(index.doc(d)["source"] for d in range(index.num_documents))
    q = "SELECT source, count(*) AS n FROM fx_documents GROUP BY source ORDER BY source"
    with flight_sql.connect(server, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM fx_documents")
        assert cur.fetchone()[0] == index.num_documents
        cur.execute(q)
        got = cur.fetch_arrow_table()
    want = familiar.sql(q, index={"fx_documents": index_dir})
    assert got.to_pylist() == want.to_pylist()
    assert {r["source"]: r["n"] for r in got.to_pylist()} == dict(by_source)


def test_adbc_sees_the_row_limit_the_tables_and_the_server(server, index_dir):
    with flight_sql.connect(server, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT v FROM range(1000000) r(v)")
            assert cur.fetch_arrow_table().num_rows == 7
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = [
            t["table_name"]
            for catalog in objects
            for schema in catalog["catalog_db_schemas"] or []
            for t in schema["db_schema_tables"] or []
        ]
        assert tables == ["fx_documents"]
        schema = conn.adbc_get_table_schema("fx_documents")
        want = familiar.sql(
            "SELECT * FROM fx_documents LIMIT 0", index={"fx_documents": index_dir}
        ).schema
        assert schema.names == want.names and "source" in schema.names
        assert [f.type for f in schema] == [f.type for f in want]
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "familiar"


def test_adbc_gets_an_exception_in_words_for_writes_and_bad_sql(server, tmp_path):
    out = tmp_path / "out.csv"
    with flight_sql.connect(server, autocommit=True) as conn:
        for q, words in [
            (f"COPY (SELECT 1) TO '{out}'", "COPY"),
            ("DROP TABLE fx_documents", "DROP"),
            ("SELEKT 1", "SELEKT"),
        ]:
            with conn.cursor() as cur:
                with pytest.raises(adbc_driver_manager.Error) as e:
                    cur.execute(q)
                assert words in str(e.value), str(e.value)
        # Still answering.
        with conn.cursor() as cur:
            cur.execute("SELECT 1 AS one")
            assert cur.fetchone() == (1,)
    assert not out.exists()
