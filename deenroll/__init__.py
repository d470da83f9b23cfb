"""deenroll: de-enroll leads that finished their campaign sequence.

The logic lives in the SQL files (migrations/, functions/, views/); this
package only connects, orders, times, reports and exits with the right code.
"""

__version__ = "0.1.0"
