"""`deenroll run` on the client side.

The run is the database's loop, deenroll.run_de_enrollment_loop (pg_cron's CALL runs it too): it
decides which clients, in what order, how the calls share them, which open runs they help, the
final fold and when to stop. Here: `calls` makes one CALL per connection and gathers what they
report; `session` is one such connection, reopened after a restart; `options` checks what the
user typed; `report` is what the run did.
"""
