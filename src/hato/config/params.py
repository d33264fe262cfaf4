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
_p("mail_name", S, "hato", "The mail system name shown in the SMTP greeting and headers.")
_p("mail_version", S, "", "The version of the mail system.", computed=True)
_p("mail_release_date", S, "", "The release date of the mail system.", computed=True)
_p("proxy_interfaces", L, "",
   "Addresses this system receives mail on through a proxy or NAT device.")

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
_p("html_directory", S, "no", 'Where HTML documentation is installed, or "no".')
_p("mailq_path", S, "/usr/bin/mailq", "Where the Sendmail-compatible mailq command is installed.")
_p("manpage_directory", S, "/usr/share/man", "Where the manual pages are installed.")
_p("newaliases_path", S, "/usr/bin/newaliases",
   "Where the Sendmail-compatible newaliases command is installed.")
_p("process_id_directory", S, "pid", "The directory for PID files, relative to $queue_directory.")
_p("readme_directory", S, "no", 'Where README documentation is installed, or "no".')
_p("sample_directory", S, "/etc/hato", "The directory with example configuration files.")
_p("sendmail_path", S, "/usr/sbin/sendmail",
   "Where the Sendmail-compatible sendmail command is installed.")
_p("shlib_directory", S, "no", 'Where shared libraries and database plugins live, or "no".')

# --- master and services ------------------------------------------------------
_p("daemon_table_open_error_is_fatal", B, "no",
   "Whether a daemon exits (yes) or degrades (no) when a lookup table fails to open.")
_p("daemon_timeout", T, "18000s",
   "How long a daemon may spend on one request before its watchdog kills it.", lo=1)
_p("export_environment", L, "TZ MAIL_CONFIG LANG",
   "Environment variables passed on to external commands.")
_p("import_environment", L,
   "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C POSTLOG_SERVICE"
   " POSTLOG_HOSTNAME",
   "Environment variables kept from the parent process, or name=value settings.")
_p("known_tcp_ports", L, "lmtp=24, smtp=25, smtps=submissions=465, submission=587",
   "Port numbers for service names, used instead of looking up /etc/services.")
_p("master_service_disable", L, "",
   "master.cf services (name/type or type) that master does not start.")
_p("max_idle", T, "100s", "How long an idle daemon process waits for work before it exits.", lo=1)
_p("max_use", I, "100", "How many requests a daemon process serves before it exits.", lo=1)
_p("service_throttle_time", T, "60s",
   "How long master waits before restarting a service that keeps failing.", lo=1)

# --- multiple instances -------------------------------------------------------
_p("alternate_config_directories", L, "",
   "Other configuration directories that users may name with -c or MAIL_CONFIG.")
_p("multi_instance_directories", L, "", "The configuration directories of the secondary instances.")
_p("multi_instance_enable", B, "no",
   "Allow the multi-instance manager to start and stop this instance.")
_p("multi_instance_group", S, "", "The instance group this instance belongs to.")
_p("multi_instance_name", S, "", "The name of this instance.")
_p("multi_instance_wrapper", S, "",
   "The multi-instance manager command that the start/stop command calls.")
_p("postmulti_control_commands", L, "reload flush",
   "Commands that postmulti runs only on instances that are running.")
_p("postmulti_start_commands", L, "start",
   "Commands that postmulti treats as starting an instance.")
_p("postmulti_stop_commands", L, "stop abort drain quick-stop",
   "Commands that postmulti treats as stopping an instance.")

# --- logging -----------------------------------------------------------------
_p("maillog_file", S, "", "The file that hato logs to instead of syslog.")
_p("maillog_file_prefixes", L, "/var, /dev/stdout", "Path prefixes that maillog_file may use.")
_p("syslog_name", S, "${multi_instance_name?{$multi_instance_name}:{postfix}}",
   "The name that prefixes each program name in log records.")
_p("syslog_facility", S, "mail", "The syslog facility of log records.")
_p("debug_peer_level", I, "2",
   "How much verbose logging increases for peers matching debug_peer_list.", lo=1)
_p("debug_peer_list", L, "",
   "Peer names, addresses or destinations that get extra verbose logging.")
_p("delay_logging_resolution_limit", I, "2",
   "The number of decimal digits for sub-second delays in log records.", hi=6)
_p("helpful_warnings", B, "yes", "Log warnings about questionable settings, with suggestions.")
_p("info_log_address_format", S, "external",
   "How addresses are written in non-debug logging: external or internal form.")
_p("maillog_file_compressor", S, "gzip",
   "The program that compresses $maillog_file after rotation.")
_p("maillog_file_rotate_suffix", S, "%Y%m%d-%H%M%S",
   "The strftime() suffix appended to $maillog_file when it is rotated.")
_p("respectful_logging", B, "${{$compatibility_level} <level {3.6} ? {no} : {yes}}",
   'Log "allowlist"/"denylist" instead of the older "whitelist"/"blacklist".')
_p("show_user_unknown_table_name", B, "yes", 'Name the recipient table in "User unknown" replies.')

# --- lookup tables ------------------------------------------------------------
_p("default_database_type", S, "hash",
   "The table type used by postmap, postalias and newaliases when none is given.")
_p("lmdb_map_size", Z, "16777216", "The initial size limit of an lmdb database, in bytes.", lo=1)
_p("parent_domain_matches_subdomains", L,
   "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,"
   "qmqpd_authorized_clients,relay_domains,smtpd_access_maps",
   "Features where the pattern example.com also matches its subdomains.")
_p("proxy_read_maps", M,
   "$local_recipient_maps $mydestination $virtual_alias_maps $virtual_alias_domains"
   " $virtual_mailbox_maps $virtual_mailbox_domains $relay_recipient_maps $relay_domains"
   " $canonical_maps $sender_canonical_maps $recipient_canonical_maps $relocated_maps"
   " $transport_maps $mynetworks $smtpd_sender_login_maps $sender_bcc_maps $recipient_bcc_maps"
   " $smtp_generic_maps $lmtp_generic_maps $alias_maps $smtpd_client_restrictions"
   " $smtpd_helo_restrictions $smtpd_sender_restrictions $smtpd_relay_restrictions"
   " $smtpd_recipient_restrictions $address_verify_sender_dependent_default_transport_maps"
   " $address_verify_sender_dependent_relayhost_maps $address_verify_transport_maps"
   " $fallback_transport_maps $lmtp_discard_lhlo_keyword_address_maps"
   " $lmtp_pix_workaround_maps $lmtp_sasl_password_maps $lmtp_tls_policy_maps"
   " $mailbox_command_maps $mailbox_transport_maps"
   " $postscreen_discard_ehlo_keyword_address_maps $rbl_reply_maps"
   " $sender_dependent_default_transport_maps $sender_dependent_relayhost_maps"
   " $smtp_discard_ehlo_keyword_address_maps $smtp_pix_workaround_maps"
   " $smtp_sasl_password_maps $smtp_tls_policy_maps $smtpd_discard_ehlo_keyword_address_maps"
   " $smtpd_milter_maps $virtual_gid_maps $virtual_uid_maps $local_login_sender_maps"
   " $postscreen_reject_footer_maps $smtpd_reject_footer_maps $tls_server_sni_maps"
   " $tlsproxy_client_policy_maps $default_delivery_status_filter $lmtp_delivery_status_filter"
   " $lmtp_dns_reply_filter $lmtp_reply_filter $local_delivery_status_filter"
   " $pipe_delivery_status_filter $postscreen_command_filter $smtp_delivery_status_filter"
   " $smtp_dns_reply_filter $smtp_reply_filter $smtpd_command_filter $smtpd_dns_reply_filter"
   " $virtual_delivery_status_filter $body_checks $header_checks $lmtp_body_checks"
   " $lmtp_header_checks $lmtp_mime_header_checks $lmtp_nested_header_checks"
   " $milter_header_checks $mime_header_checks $nested_header_checks $smtp_body_checks"
   " $smtp_header_checks $smtp_mime_header_checks $smtp_nested_header_checks",
   "Tables that the proxymap service may read.")
_p("proxy_write_maps", M,
   "$smtp_sasl_auth_cache_name $lmtp_sasl_auth_cache_name $address_verify_map"
   " $postscreen_cache_map",
   "Tables that the proxywrite service may update.")

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
_p("anvil_status_update_time", T, "600s",
   "How often anvil logs its peak connection and rate statistics.", lo=1)
_p("hato_anvil_backend", S, "local",
   "Where anvil keeps its counters: local, or redis:URL to share them between instances.")
_p("hato_anvil_service_name", S, "",
   "The service name smtpd's clients are counted under; empty means the master.cf name.")

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
    "mail_name": "the greeting and Received: headers name the software that runs: hato",
    "smtpd_forbid_bare_newline": "defends against SMTP smuggling by default, as Postfix 3.9 does "
                                 "(normalize); Postfix 3.7 defaults to no",
    "html_directory": "hato installs no HTML documentation",
    "readme_directory": "hato installs no README files (its documentation is in docs/)",
    "sample_directory": "follows config_directory",
    "shlib_directory": "hato loads no shared libraries or database plugins",
}


#: Parameters hato knows (postconf shows them) whose setting has no effect
#: yet, each with the reason; ``hato check`` names them when they are set.
NO_EFFECT: dict[str, str] = {
    "smtpd_tls_dcert_file": "DSA certificates are not supported",
    "smtpd_tls_dkey_file": "DSA certificates are not supported",
    "smtpd_tls_dh512_param_file": "export ciphers are not supported",
    "smtpd_tls_session_cache_database": "each smtpd worker keeps OpenSSL's in-memory session "
                                        "cache and its own session-ticket keys",
    "smtpd_tls_always_issue_session_ids": "OpenSSL's defaults apply",
    "smtpd_tls_session_cache_timeout": "OpenSSL's default session lifetime applies (Python's "
                                       "ssl module cannot set it)",
    "tls_session_ticket_cipher": "OpenSSL's default ticket cipher applies",
    "smtpd_tls_ccert_verifydepth": "OpenSSL's default verification depth applies",
    "smtpd_proxy_filter": "before-queue proxy filters are not implemented",
    "internal_mail_filter_classes": "mail hato makes itself (bounces, notices) goes through "
                                    "neither milters nor header/body checks, as with the "
                                    "empty default",
    "address_verify_pending_request_limit": "qmgr does not limit the number of address "
                                            "verification probes in progress",
    # The SMTP and LMTP clients
    "smtp_reply_filter": "server replies are used as received",
    "smtp_delivery_status_filter": "delivery status filters are not implemented",
    "smtp_dns_reply_filter": "DNS replies are used as received",
    "smtp_dns_resolver_options": "dnspython's resolver settings apply",
    "smtp_bind_address_enforce": "a bind address that cannot be used always fails the connection attempt (as with yes)",
    "smtp_cname_overrides_servername": "the server name is always the name looked up, never a CNAME target",
    "smtp_min_data_rate": "only the per-stage timeouts apply",
    "smtp_per_request_deadline": "only the per-stage timeouts apply",
    "smtp_pix_workarounds": "PIX firewall workarounds are not implemented",
    "smtp_pix_workaround_maps": "PIX firewall workarounds are not implemented",
    "smtp_pix_workaround_delay_time": "PIX firewall workarounds are not implemented",
    "smtp_pix_workaround_threshold_time": "PIX firewall workarounds are not implemented",
    "smtp_quote_rfc821_envelope": "envelope addresses are always quoted as RFC 5321 requires",
    "smtp_send_dummy_mail_auth": "MAIL FROM never carries AUTH=<>",
    "smtp_send_xforward_command": "XFORWARD is never sent",
    "smtp_xforward_timeout": "XFORWARD is never sent",
    "smtp_sasl_path": "hato's own SASL client is used",
    "smtp_sasl_type": "hato's own SASL client is used",
    "smtp_sasl_auth_cache_name": "failed SASL logins are not cached",
    "smtp_sasl_auth_cache_time": "failed SASL logins are not cached",
    "smtp_tls_per_site": "obsolete: use the TLS policy maps",
    "smtp_tls_dcert_file": "DSA certificates are not supported",
    "smtp_tls_dkey_file": "DSA certificates are not supported",
    "smtp_tls_note_starttls_offer": "the STARTTLS offer is not logged",
    "smtp_tls_scert_verifydepth": "OpenSSL's default verification depth applies",
    "smtp_tls_block_early_mail_reply": "replies pipelined before the TLS handshake are always discarded (as with yes)",
    "smtp_skip_quit_response": "the reply to QUIT is never waited for (as with yes)",
    "smtp_address_verify_target": "address probes always end after the RCPT replies (rcpt)",
    "smtp_discard_ehlo_keyword_address_maps": "per-server EHLO keyword maps are not implemented (smtp_discard_ehlo_keywords works)",
    "smtp_always_send_ehlo": "EHLO is always sent unless smtp_never_send_ehlo = yes",
    "lmtp_reply_filter": "server replies are used as received",
    "lmtp_delivery_status_filter": "delivery status filters are not implemented",
    "lmtp_dns_reply_filter": "DNS replies are used as received",
    "lmtp_dns_resolver_options": "dnspython's resolver settings apply",
    "lmtp_bind_address_enforce": "a bind address that cannot be used always fails the connection attempt (as with yes)",
    "lmtp_cname_overrides_servername": "the server name is always the name looked up, never a CNAME target",
    "lmtp_min_data_rate": "only the per-stage timeouts apply",
    "lmtp_per_request_deadline": "only the per-stage timeouts apply",
    "lmtp_pix_workarounds": "PIX firewall workarounds are not implemented",
    "lmtp_pix_workaround_maps": "PIX firewall workarounds are not implemented",
    "lmtp_pix_workaround_delay_time": "PIX firewall workarounds are not implemented",
    "lmtp_pix_workaround_threshold_time": "PIX firewall workarounds are not implemented",
    "lmtp_quote_rfc821_envelope": "envelope addresses are always quoted as RFC 5321 requires",
    "lmtp_send_dummy_mail_auth": "MAIL FROM never carries AUTH=<>",
    "lmtp_send_xforward_command": "XFORWARD is never sent",
    "lmtp_xforward_timeout": "XFORWARD is never sent",
    "lmtp_sasl_path": "hato's own SASL client is used",
    "lmtp_sasl_type": "hato's own SASL client is used",
    "lmtp_sasl_auth_cache_name": "failed SASL logins are not cached",
    "lmtp_sasl_auth_cache_time": "failed SASL logins are not cached",
    "lmtp_tls_per_site": "obsolete: use the TLS policy maps",
    "lmtp_tls_dcert_file": "DSA certificates are not supported",
    "lmtp_tls_dkey_file": "DSA certificates are not supported",
    "lmtp_tls_note_starttls_offer": "the STARTTLS offer is not logged",
    "lmtp_tls_scert_verifydepth": "OpenSSL's default verification depth applies",
    "lmtp_tls_block_early_mail_reply": "replies pipelined before the TLS handshake are always discarded (as with yes)",
    "lmtp_skip_quit_response": "the reply to QUIT is never waited for (as with yes)",
    "lmtp_address_verify_target": "address probes always end after the RCPT replies (rcpt)",
    "lmtp_discard_lhlo_keyword_address_maps": "per-server LHLO keyword maps are not implemented (lmtp_discard_lhlo_keywords works)",
    "dns_ncache_ttl_fix_enable": "dnspython's negative caching applies",
    "dnssec_probe": "hato does not probe the resolver's DNSSEC support at start",
    "tcp_windowsize": "the kernel's TCP window applies",
    "smtp_tls_force_insecure_host_tlsa_lookup": "TLSA records are looked up only for "
                                                "DNSSEC-validated hosts",
    "lmtp_tls_force_insecure_host_tlsa_lookup": "TLSA records are looked up only for "
                                                "DNSSEC-validated hosts",
    "lmtp_sender_dependent_authentication": "sender-dependent credentials are used by the "
                                            "smtp client only",
    "tls_config_file": "OpenSSL's own configuration file is not read by hato",
    "tls_config_name": "OpenSSL's own configuration file is not read by hato",
    "tls_daemon_random_bytes": "OpenSSL seeds itself from the kernel",
    "tls_random_bytes": "OpenSSL seeds itself from the kernel",
    "tls_random_exchange_name": "OpenSSL seeds itself from the kernel",
    "tls_random_prng_update_period": "OpenSSL seeds itself from the kernel",
    "tls_random_reseed_period": "OpenSSL seeds itself from the kernel",
    "tls_random_source": "OpenSSL seeds itself from the kernel",
    "tls_disable_workarounds": "OpenSSL's default workarounds apply",
    "tls_ssl_options": "OpenSSL's default options apply (with compression off)",
    "tls_eecdh_auto_curves": "OpenSSL's default curves apply",
    "tls_fast_shutdown_enable": "Python's ssl module closes connections its own way",
    "tls_legacy_public_key_fingerprints": "fingerprints of public keys are always of the "
                                          "whole SubjectPublicKeyInfo",
}


def get(name: str) -> Param | None:
    return PARAMS.get(name)


# Names Postfix still accepts in main.cf but no longer shows with ``postconf -d``
# (its pcf_legacy_str_table): each is only the fallback of its successor's
# default, e.g. postscreen_denylist_action = ${postscreen_blacklist_action?...}.
# They are not in PARAMS; a main.cf that sets one is not using an unknown name.
LEGACY_PARAMS: dict[str, str] = {
    "authorized_verp_clients": "smtpd_authorized_verp_clients",
    "fallback_relay": "smtp_fallback_relay",
    "lmtp_per_record_deadline": "lmtp_per_request_deadline",
    "postscreen_blacklist_action": "postscreen_denylist_action",
    "postscreen_dnsbl_ttl": "postscreen_dnsbl_max_ttl",
    "postscreen_dnsbl_whitelist_threshold": "postscreen_dnsbl_allowlist_threshold",
    "postscreen_whitelist_interfaces": "postscreen_allowlist_interfaces",
    "smtp_per_record_deadline": "smtp_per_request_deadline",
    "smtpd_client_connection_limit_exceptions": "smtpd_client_event_limit_exceptions",
    "smtpd_per_record_deadline": "smtpd_per_request_deadline",
    "tlsproxy_client_level": "tlsproxy_client_security_level",
    "tlsproxy_client_policy": "tlsproxy_client_policy_maps",
    "virtual_maps": "virtual_alias_maps",
}


# Parameters whose value is not $-expanded when the configuration is read
# (Postfix's CONFIG_RAW_TABLE): the program that uses the value expands it later
# with its own macros ($home, $rbl_code, ...), and postconf -x prints it as is.
RAW_PARAMS: frozenset[str] = frozenset({
    "command_execution_directory",
    "default_rbl_reply",
    "forward_path",
    "luser_relay",
    "mailbox_command",
    "postscreen_expansion_filter",
    "postscreen_reject_footer",
    "smtpd_expansion_filter",
    "smtpd_reject_footer",
})


# The rest of the table lives in data modules, one per area; each registers its
# entries with _p(), so PARAMS is complete once this module is imported.
from . import params_flow, params_smtp, params_smtpd  # noqa: F401
