"""The lakehouse tables as an asset: created idempotently, row counts as metadata."""

import dagster as dg

from resources.lakehouse import LakehouseResource


@dg.asset(group_name="fleet", description="Creates missing lakehouse tables and columns; reports row counts.")
def lakehouse_tables(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    lake = lakehouse.get()
    created = lake.ensure_schema()
    counts = lake.table_counts()
    if created:
        context.log.info("created lakehouse tables: %s", ", ".join(created))
    return dg.MaterializeResult(
        metadata={
            "tables_created": len(created),
            "row_counts": dg.MetadataValue.json(counts),
            **{f"rows/{name}": dg.MetadataValue.int(n) for name, n in counts.items()},
        }
    )
