"""The parameter table: every main.cf parameter hato implements.

One entry per parameter: name, type, default written in Postfix syntax (so
``$name`` defaults expand exactly as Postfix expands them), bounds, and a
one-line doc. ``hato postconf -d/-n``, ``hato check``, the "unused parameter"
warnings, Settings and docs/compat.md all read this table.

Defaults equal Debian's Postfix 3.7 ``postconf -d``, except where
:data:`DELIBERATE_DIFFERENCES` names the parameter (each is explained in
docs/compat.md). Parameters hato adds carry the prefix ``hato_``.

``COMPUTED`` parameters have no fixed default: their value comes from the
host (``myhostname``), from the command line (``config_directory``) or from
the running process (``process_id``); callers pass those facts in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    STR = "string"
    BOOL = "boolean"
    INT = "integer"
    SIZE = "size"  # a byte count (Postfix's "long")
    TIME = "time"  # a number with an optional unit letter
    LIST = "list"  # comma/whitespace separated
    MAPS = "maps"  # a list of type:table lookup tables
    RESTRICTIONS = "restrictions"  # an smtpd/postscreen restriction list


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: Kind
    default: str
    doc: str
    lo: int | None = None  # lower bound (for TIME: in seconds)
    hi: int | None = None
    unit: str = "s"  # default unit letter for TIME values
    computed: bool = False  # default comes from the host or the process


_T: dict[str, Param] = {}


def _p(name: str, kind: Kind, default: str, doc: str, *, lo: int | None = None,
       hi: int | None = None, unit: str = "s", computed: bool = False) -> None:
    if name in _T:
        raise ValueError(f"parameter defined twice: {name}")
    _T[name] = Param(name, kind, default, doc, lo, hi, unit, computed)


S, B, I, Z, T, L, M, R = (Kind.STR, Kind.BOOL, Kind.INT, Kind.SIZE, Kind.TIME, Kind.LIST,
                          Kind.MAPS, Kind.RESTRICTIONS)

# --- identity and addresses -------------------------------------------------
_p("myhostname", S, "", "The internet hostname of this mail system.", computed=True)
_p("mydomain", S, "", "The internet domain name of this mail system.", computed=True)
_p("myorigin", S, "$myhostname", "The domain that locally-posted mail appears to come from.")
_p("mydestination", L, "$myhostname, localhost.$mydomain, localhost",
   "The domains this machine delivers locally.")
_p("mynetworks", L, "", "The trusted remote SMTP clients.", computed=True)
_p("mynetworks_style", S, "${{$compatibility_level} <level {2} ? {subnet} : {host}}",
   "How mynetworks is computed when not set: host, subnet or class.")
_p("inet_interfaces", L, "all", "The network interface addresses this mail system receives mail on.")
_p("inet_protocols", L, "all", "The internet protocols hato uses: ipv4, ipv6 or all.")
_p("compatibility_level", S, "0", "The backwards-compatibility level of the configuration.")
_p("mail_name", S, "Postfix", "The mail system name shown in the SMTP greeting and headers.")
_p("mail_version", S, "", "The version of the mail system.", computed=True)
_p("mail_release_date", S, "", "The release date of the mail system.", computed=True)

# --- directories, owners, processes ------------------------------------------
_p("config_directory", S, "/etc/hato", "The directory with main.cf and master.cf.", computed=True)
_p("queue_directory", S, "/var/spool/hato", "The location of the mail queue.")
_p("data_directory", S, "/var/lib/hato", "The directory with hato-writable data files.")
_p("command_directory", S, "/usr/sbin", "The location of the administrative commands.")
_p("daemon_directory", S, "/usr/lib/hato", "The location of the daemon programs.")
_p("meta_directory", S, "/etc/hato", "The location of the non-executable files shared by instances.")
_p("mail_owner", S, "postfix", "The owner of the queue and most daemon processes.")
_p("setgid_group", S, "postdrop", "The group that owns maildrop/ and the public/ sockets.")
_p("default_privs", S, "nobody", "The rights used by local delivery to an external file or command.")
_p("default_process_limit", I, "100", "The default maximal number of processes per service.", lo=1)
_p("process_id", S, "", "The process ID of a running process.", computed=True)
_p("process_name", S, "", "The name of a running process.", computed=True)
_p("service_name", S, "", "The master.cf service name of a running daemon.", computed=True)

# --- logging -----------------------------------------------------------------
_p("maillog_file", S, "", "The file that hato logs to instead of syslog.")
_p("maillog_file_prefixes", L, "/var, /dev/stdout", "Path prefixes that maillog_file may use.")
_p("syslog_name", S, "${multi_instance_name?{$multi_instance_name}:{postfix}}",
   "The name that prefixes each program name in log records.")
_p("syslog_facility", S, "mail", "The syslog facility of log records.")

# --- stress ------------------------------------------------------------------
_p("stress", S, "", "Set to yes by master when a service reaches its process limit.")

# --- anvil / per-client limits (from the reference setup) --------------------
_p("anvil_rate_time_unit", T, "60s", "The time unit over which client rates are measured.", lo=1)
_p("smtpd_recipient_limit", I, "1000", "The maximal number of recipients per message.", lo=1)
_p("smtpd_timeout", T, "${stress?{10}:{300}}s", "Time limit for sending an SMTP reply or receiving a request.", lo=1)
_p("smtpd_client_connection_count_limit", I, "50", "Maximal concurrent connections one client may make.", lo=0)
_p("smtpd_client_message_rate_limit", I, "0", "Maximal message deliveries per client per time unit.", lo=0)
_p("smtpd_client_recipient_rate_limit", I, "0", "Maximal recipients per client per time unit.", lo=0)
_p("smtpd_client_connection_rate_limit", I, "0", "Maximal connection attempts per client per time unit.", lo=0)
_p("smtpd_client_event_limit_exceptions", L,
   "${smtpd_client_connection_limit_exceptions:$mynetworks}",
   "Clients exempt from connection count, rate and request limits.")

PARAMS: dict[str, Param] = _T

# Parameters whose hato default differs from Debian's Postfix 3.7 on purpose.
# Each is explained in docs/compat.md; the differential tests skip exactly these.
DELIBERATE_DIFFERENCES: dict[str, str] = {
    "config_directory": "hato's own configuration lives in /etc/hato",
    "queue_directory": "hato's queue lives in /var/spool/hato, apart from Postfix's",
    "data_directory": "hato's data lives in /var/lib/hato",
    "daemon_directory": "hato's daemons are Python modules, not programs in /usr/lib/postfix/sbin",
    "meta_directory": "follows config_directory",
    "mail_version": "hato's own version",
    "mail_release_date": "hato's own release date",
    "process_id": "the process ID differs between any two processes",
}


def get(name: str) -> Param | None:
    return PARAMS.get(name)
