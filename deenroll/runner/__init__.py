"""`deenroll run` on the client side.

The run is the database's procedure deenroll.run_de_enrollment, the one pg_cron calls: its
loop decides which clients, in what order, how they are shared, helped and folded, and when
to stop. `calls` makes one CALL of it per connection (`--workers N`); `session` is one such
connection and the progress messages it receives; `options` checks what the user typed;
`report` words what the calls reported.
"""
