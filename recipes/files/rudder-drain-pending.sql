-- rudder-drain-pending.sql: the jobs rudder-server still has to deliver, per jobsdb, read from
-- the local jobsdb by rudder-drain (one row per table prefix: "prefix|pending jobs").
--
-- The rules are rudder-server v1.83.0's own (paths at that tag):
--   * jobsdb/jobsdb_dataset.go (newDataSet) and jobsdb/jobsdb_utils.go (getDSList): every jobsdb
--     is a list of datasets, table pairs <prefix>_jobs_<index> and <prefix>_job_status_<index>;
--     a dataset with a <prefix>_consumers_<index> table belongs to a multi-consumer handle.
--   * jobsdb/jobsdb_utils.go (getAllTableNames): a pair whose table carries a comment starting
--     with 'rudder:pre_drop:' is no longer part of the list (its jobs were copied on).
--   * jobsdb/jobsdb.go: the terminal states are succeeded, aborted, migrated and filtered;
--     failed, executing, waiting and importing are not; a job without a status is unprocessed.
--   * jobsdb/jobsdb_compaction.go (copyJobsInTx), what compaction keeps as unfinished: in a
--     single-consumer dataset a job whose latest status (highest id, the v_last_ view) is missing
--     or not terminal; in a multi-consumer dataset a job with at least one of its consumers whose
--     latest status for that consumer (the v_last_c_ view) is missing or not terminal.
--   * app/apphandlers/embeddedAppHandler.go: the jobsdbs an accepted event passes through on its
--     way out are gw (gateway -> processor), proc (processor -> destination workers, only with
--     Processor.DestinationIsolation.enabled), rt (router) and batch_rt (batch router).
--
-- A plain SELECT (query_to_xml runs the per-dataset count), so any PostgreSQL client can run it;
-- it only reads.
WITH datasets AS (
  SELECT m[1] AS prefix,
         m[2] AS idx,
         format('%I', m[1] || '_jobs_' || m[2]) AS jobs,
         format('%I', m[1] || '_job_status_' || m[2]) AS status,
         to_regclass(format('%I.%I', n.nspname, m[1] || '_consumers_' || m[2])) IS NOT NULL AS multi
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  CROSS JOIN LATERAL regexp_match(c.relname, '^(gw|proc|rt|batch_rt)_jobs_([0-9]+(?:_[0-9]+)*)$') AS m
  WHERE c.relkind = 'r'
    AND n.nspname = current_schema()
    AND m IS NOT NULL
    -- both tables of the pair exist and neither is marked for drop
    AND to_regclass(format('%I.%I', n.nspname, m[1] || '_job_status_' || m[2])) IS NOT NULL
    AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_description d
      WHERE d.objsubid = 0
        AND d.objoid IN (c.oid, to_regclass(format('%I.%I', n.nspname, m[1] || '_job_status_' || m[2])))
        AND d.description LIKE 'rudder:pre_drop:%')
),
counts AS (
  SELECT prefix,
         (xpath('/row/n/text()', query_to_xml(
           CASE WHEN multi THEN format(
             'SELECT count(*) AS n FROM %1$s j
               WHERE EXISTS (
                 SELECT 1 FROM unnest(j.consumers) AS c(consumer)
                  WHERE NOT EXISTS (
                    SELECT 1 FROM (
                      SELECT s.job_state FROM %2$s s
                       WHERE s.job_id = j.job_id AND s.consumer = c.consumer
                       ORDER BY s.id DESC LIMIT 1) AS last
                     WHERE last.job_state IN (''succeeded'', ''aborted'', ''migrated'', ''filtered'')))',
             jobs, status)
           ELSE format(
             'SELECT count(*) AS n FROM %1$s j
               WHERE NOT EXISTS (
                 SELECT 1 FROM (
                   SELECT s.job_state FROM %2$s s
                    WHERE s.job_id = j.job_id
                    ORDER BY s.id DESC LIMIT 1) AS last
                  WHERE last.job_state IN (''succeeded'', ''aborted'', ''migrated'', ''filtered''))',
             jobs, status)
           END, false, true, '')))[1]::text::bigint AS pending
  FROM datasets
)
SELECT p.prefix, coalesce(sum(counts.pending), 0)::bigint AS pending
FROM unnest(ARRAY['gw', 'proc', 'rt', 'batch_rt']) WITH ORDINALITY AS p(prefix, ord)
LEFT JOIN counts ON counts.prefix = p.prefix
GROUP BY p.prefix, p.ord
ORDER BY p.ord;
