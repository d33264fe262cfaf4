"""Parameters of the mail flow: queue, qmgr, cleanup, address resolution,
local and virtual delivery, bounces, sendmail and address verification.

Data only: each ``_p(...)`` call registers one parameter into the table in
:mod:`hato.config.params`, which imports this module.
"""

from __future__ import annotations

from .params import B, I, L, M, R, S, T, Z, _p

# --- queue files --------------------------------------------------------------
_p("enable_long_queue_ids", B, "no", "Use long, non-repeating queue IDs.")
_p("hash_queue_depth", I, "1",
   "The number of subdirectory levels for the queues in hash_queue_names.", lo=1)
_p("hash_queue_names", L, "deferred, defer",
   "The queue directories that are split into subdirectories.")
_p("queue_file_attribute_count_limit", I, "100",
   "The maximal number of name=value attributes in a queue file.", lo=1)
_p("queue_minfree", Z, "0",
   "Free bytes needed in the queue file system to accept mail; 0: 1.5 x message size limit.")

# --- queue manager: scheduling, retries and lifetimes -------------------------
_p("bounce_queue_lifetime", T, "5d",
   "How long a bounce message may stay in the queue before it is given up.", hi=8640000, unit="d")
_p("default_delivery_slot_cost", I, "5",
   "How often the scheduler may preempt one message with another.")
_p("default_delivery_slot_discount", I, "50",
   "The percentage of delivery slots a preempting message gets back.", hi=100)
_p("default_delivery_slot_loan", I, "3",
   "How many delivery slots a message may borrow before preempting.")
_p("default_destination_concurrency_failed_cohort_limit", I, "1",
   "How many failed groups of connections make a destination count as dead.")
_p("default_destination_concurrency_limit", I, "20",
   "The default maximal number of parallel deliveries to one destination.")
_p("default_destination_concurrency_negative_feedback", S, "1",
   "How much the concurrency drops after a connection or handshake failure.")
_p("default_destination_concurrency_positive_feedback", S, "1",
   "How much the concurrency rises after a delivery without connection failure.")
_p("default_destination_rate_delay", T, "0s",
   "The default pause between deliveries to one destination over one transport.")
_p("default_destination_recipient_limit", I, "50",
   "The default maximal number of recipients per delivery.")
_p("default_extra_recipient_limit", I, "1000",
   "The default extra room for in-memory recipients per transport.")
_p("default_minimum_delivery_slots", I, "3",
   "How many recipients a message needs before the scheduler preempts.")
_p("default_recipient_limit", I, "20000",
   "The default maximal number of in-memory recipients per transport.")
_p("default_recipient_refill_delay", T, "5s",
   "The default longest wait before more recipients of a message are read in.", lo=1)
_p("default_recipient_refill_limit", I, "100",
   "The default number of recipients read in at once.", lo=1)
_p("default_transport_rate_delay", T, "0s",
   "The default pause between deliveries over one transport, for any destination.")
_p("defer_transports", L, "", "Transports that deliver only when the queue is flushed by hand.")
_p("delay_warning_time", T, "0h",
   "How long mail stays queued before the sender gets a delay warning; 0 means never.", unit="h")
_p("destination_concurrency_feedback_debug", B, "no",
   "Log the scheduler's concurrency feedback decisions.")
_p("initial_destination_concurrency", I, "5",
   "The concurrency that delivery to a new destination starts with.", lo=1)
_p("local_destination_concurrency_limit", I, "2",
   "The maximal parallel deliveries to one recipient over the local transport.")
_p("local_destination_recipient_limit", I, "1",
   "The maximal number of recipients per delivery over the local transport.")
_p("maximal_backoff_time", T, "4000s",
   "The longest wait between attempts to deliver deferred mail.", lo=1)
_p("maximal_queue_lifetime", T, "5d",
   "How long mail may stay queued before it is bounced as undeliverable.", hi=8640000, unit="d")
_p("minimal_backoff_time", T, "300s",
   "The shortest wait between attempts to deliver deferred mail.", lo=1)
_p("qmgr_clog_warn_time", T, "300s",
   "The shortest interval between warnings that a destination clogs the active queue.")
_p("qmgr_daemon_timeout", T, "1000s",
   "How long the queue manager may spend on one request before its watchdog kills it.", lo=1)
_p("qmgr_fudge_factor", I, "100",
   "Obsolete: the share of delivery resources a large mailing may use.", lo=10, hi=100)
_p("qmgr_ipc_timeout", T, "60s", "Time limit for the queue manager's internal communication.", lo=1)
_p("qmgr_message_active_limit", I, "20000",
   "The maximal number of messages in the active queue.", lo=1)
_p("qmgr_message_recipient_limit", I, "20000",
   "The maximal number of recipients the queue manager holds in memory.", lo=1)
_p("qmgr_message_recipient_minimum", I, "10",
   "The least number of in-memory recipients for any message.", lo=1)
_p("queue_run_delay", T, "300s", "The time between scans of the deferred queue.", lo=1)
_p("transport_retry_time", T, "60s",
   "How long the queue manager waits before retrying a failing transport.", lo=1)

# --- fast flush (ETRN, sendmail -qR) ------------------------------------------
_p("fast_flush_domains", L, "$relay_domains",
   'Destinations that get per-destination logs for fast ETRN and "sendmail -qR".')
_p("fast_flush_purge_time", T, "7d",
   "How long an empty per-destination flush log is kept.", lo=1, unit="d")
_p("fast_flush_refresh_time", T, "12h",
   "How old an unread per-destination flush log may get before it is rebuilt.", lo=1, unit="h")

# --- cleanup: headers, body, content filters and size limits ------------------
_p("always_add_missing_headers", B, "no",
   "Add missing From:, To:, Date: and Message-ID: headers to mail from any client.")
_p("always_bcc", S, "", "An address that receives a blind copy of every message.")
_p("body_checks", M, "", "Tables of patterns and actions applied to each body line.")
_p("body_checks_size_limit", I, "51200", "How many bytes of each body part body_checks inspects.")
_p("cleanup_replace_stray_cr_lf", B, "yes",
   "Replace a lone CR or LF in message content with a space.")
_p("content_filter", S, "",
   "The transport:nexthop that receives all mail after it is queued, for filtering.")
_p("duplicate_filter_limit", I, "1000",
   "How many addresses the duplicate-recipient filter remembers.")
_p("enable_original_recipient", B, "yes",
   "Keep the original recipient address after rewriting, for DSN and logging.")
_p("header_address_token_limit", I, "10240",
   "The maximal number of address tokens in one address header.", lo=1)
_p("header_checks", M, "", "Tables of patterns and actions applied to the primary message headers.")
_p("header_from_format", S, "standard",
   "The format of a From: header that the mail system adds: standard or obsolete.")
_p("header_size_limit", I, "102400", "The maximal size of one message header, in bytes.", lo=1)
_p("hopcount_limit", I, "50",
   "The maximal number of Received: headers before mail is bounced as a loop.", lo=1)
_p("in_flow_delay", T, "1s",
   "The pause before accepting a message when mail arrives faster than it leaves.", hi=10)
_p("internal_mail_filter_classes", L, "",
   "Which kinds of internally generated mail go through milters and header/body checks.")
_p("line_length_limit", I, "2048",
   "Longer input lines are split into pieces of at most this many bytes.", lo=512)
_p("local_header_rewrite_clients", R, "permit_inet_interfaces",
   "Clients whose message header addresses are rewritten and completed.")
_p("message_drop_headers", L, "bcc, content-length, resent-bcc, return-path",
   "Headers that cleanup removes from every message.")
_p("message_reject_characters", S, "", "Characters that cause a message to be rejected.")
_p("message_size_limit", Z, "10240000", "The maximal message size in bytes, envelope included.")
_p("message_strip_characters", S, "", "Characters removed from message content.")
_p("mime_boundary_length_limit", I, "2048",
   "The maximal length of a MIME multipart boundary string.", lo=1)
_p("mime_header_checks", M, "$header_checks", "Tables of patterns and actions for MIME headers.")
_p("mime_nesting_limit", I, "100", "The maximal nesting depth of MIME parts.", lo=1)
_p("nested_header_checks", M, "$header_checks",
   "Tables of patterns and actions for headers of attached messages.")
_p("receive_override_options", L, "",
   "Turn off recipient validation, content filters or address mapping on input.")
_p("recipient_bcc_maps", M, "", "Tables with a blind-copy address per recipient.")
_p("remote_header_rewrite_domain", S, "",
   "The domain for incomplete header addresses from remote clients; empty: no rewrite.")
_p("sender_bcc_maps", M, "", "Tables with a blind-copy address per sender.")
_p("undisclosed_recipients_header", S, "",
   "The header added when a message has no To: or Cc: header.")

# --- cleanup: canonical mapping, masquerading, virtual aliases ----------------
_p("canonical_classes", L, "envelope_sender, envelope_recipient, header_sender, header_recipient",
   "Which addresses canonical_maps rewrites.")
_p("canonical_maps", M, "", "Address rewriting tables for headers and envelopes.")
_p("masquerade_classes", L, "envelope_sender, header_sender, header_recipient",
   "Which addresses are masqueraded.")
_p("masquerade_domains", L, "", "Domains whose subdomain part is stripped from addresses.")
_p("masquerade_exceptions", L, "", "User names that are never masqueraded.")
_p("propagate_unmatched_extensions", L, "canonical, virtual",
   "Which tables copy an address extension from the key to the result.")
_p("recipient_canonical_classes", L, "envelope_recipient, header_recipient",
   "Which addresses recipient_canonical_maps rewrites.")
_p("recipient_canonical_maps", M, "", "Address rewriting tables for recipient addresses.")
_p("sender_canonical_classes", L, "envelope_sender, header_sender",
   "Which addresses sender_canonical_maps rewrites.")
_p("sender_canonical_maps", M, "", "Address rewriting tables for sender addresses.")
_p("virtual_alias_address_length_limit", I, "1000",
   "The maximal length of an address after virtual alias expansion.", lo=1)
_p("virtual_alias_expansion_limit", I, "1000",
   "The maximal number of addresses virtual alias expansion makes from one recipient.", lo=1)
_p("virtual_alias_maps", M, "$virtual_maps",
   "Tables that alias addresses or domains to other addresses.")
_p("virtual_alias_recursion_limit", I, "1000",
   "The maximal nesting depth of virtual alias expansion.", lo=1)

# --- MIME, 8-bit and SMTPUTF8 -------------------------------------------------
_p("detect_8bit_encoding_header", B, "yes",
   "Treat a Content-Transfer-Encoding: 8bit header as declaring 8BITMIME content.")
_p("disable_mime_input_processing", B, "no", "Turn off MIME parsing of incoming mail.")
_p("disable_mime_output_conversion", B, "no",
   "Do not convert 8BITMIME content to 7BIT for servers that lack 8BITMIME.")
_p("enable_idna2003_compatibility", B, "no",
   "Use IDNA2003-compatible transitional processing for UTF-8 domain names.")
_p("smtputf8_autodetect_classes", L, "sendmail, verify",
   "Kinds of mail for which the need for SMTPUTF8 is detected automatically.")
_p("smtputf8_enable", B, "${{$compatibility_level} <level {1} ? {no} : {yes}}",
   "Support SMTPUTF8 (internationalized addresses, RFC 6531).")
_p("strict_7bit_headers", B, "no", "Reject mail with 8-bit text in headers.")
_p("strict_8bitmime", B, "no", "Enable both strict_7bit_headers and strict_8bitmime_body.")
_p("strict_8bitmime_body", B, "no",
   "Reject an 8-bit body without MIME information that declares it.")
_p("strict_mime_encoding_domain", B, "no",
   "Reject invalid Content-Transfer-Encoding for message/* and multipart/* types.")
_p("strict_smtputf8", B, "no", "Reject UTF-8 envelope addresses unless the client sent SMTPUTF8.")

# --- address resolution and routing (trivial-rewrite) -------------------------
_p("allow_percent_hack", B, "yes", 'Rewrite "user%domain" to "user@domain".')
_p("append_at_myorigin", B, "yes", 'Append "@$myorigin" to local addresses without a domain.')
_p("append_dot_mydomain", B, "${{$compatibility_level} <level {1} ? {yes} : {no}}",
   'Append ".$mydomain" to local addresses whose domain has no dot.')
_p("default_filter_nexthop", S, "", "The next hop for content_filter or FILTER when none is given.")
_p("default_transport", S, "smtp",
   "The transport and next hop for all domains not handled otherwise.")
_p("empty_address_default_transport_maps_lookup_key", S, "<>",
   "The key used instead of the null sender in sender_dependent_default_transport_maps.")
_p("empty_address_relayhost_maps_lookup_key", S, "<>",
   "The key used instead of the null sender in sender_dependent_relayhost_maps.")
_p("local_recipient_maps", M, "proxy:unix:passwd.byname $alias_maps",
   "Tables of all local recipients; unknown ones are rejected in SMTP.")
_p("local_transport", S, "local:$myhostname",
   "The transport and next hop for domains in $mydestination.")
_p("recipient_delimiter", S, "", "Characters that separate a user name from its address extension.")
_p("relay_domains", L, "${{$compatibility_level} <level {2} ? {$mydestination} : {}}",
   "Domains (and their subdomains) this system relays mail to.")
_p("relay_recipient_maps", M, "", "Tables of all valid addresses in $relay_domains.")
_p("relay_transport", S, "relay", "The transport and next hop for domains in $relay_domains.")
_p("relayhost", S, "", "The next hop for non-local mail, instead of the recipient's domain.")
_p("relocated_maps", M, "", "Tables with new contact information for users or domains that moved.")
_p("resolve_dequoted_address", B, "yes",
   "Resolve recipient addresses after removing quotes (safe, not strictly correct).")
_p("resolve_null_domain", B, "no", 'Resolve "user@" as a local address instead of rejecting it.')
_p("resolve_numeric_domain", B, "no",
   'Resolve "user@ipaddress" as "user@[ipaddress]" instead of rejecting it.')
_p("sender_dependent_default_transport_maps", M, "",
   "Per-sender replacements for default_transport.")
_p("sender_dependent_relayhost_maps", M, "", "Per-sender replacements for relayhost.")
_p("swap_bangpath", B, "yes", 'Rewrite "site!user" to "user@site".')
_p("transport_maps", M, "", "Tables that map recipients or domains to a transport and next hop.")
_p("virtual_alias_domains", L, "$virtual_alias_maps",
   "Domains whose addresses are all aliases for addresses elsewhere.")
_p("virtual_mailbox_domains", L, "$virtual_mailbox_maps",
   "Domains delivered by $virtual_transport.")
_p("virtual_mailbox_maps", M, "",
   "Tables of all valid addresses in $virtual_mailbox_domains, with their mailbox paths.")
_p("virtual_transport", S, "virtual",
   "The transport and next hop for domains in $virtual_mailbox_domains.")

# --- local delivery: aliases, .forward, mailboxes, commands -------------------
_p("alias_database", M, "hash:/etc/aliases",
   'The alias tables that newaliases and "sendmail -bi" rebuild.')
_p("alias_maps", M, "hash:/etc/aliases, nis:mail.aliases",
   "The alias tables used by local delivery.")
_p("allow_mail_to_commands", L, "alias, forward",
   'Where local delivery to "|command" is allowed: alias, forward, include.')
_p("allow_mail_to_files", L, "alias, forward",
   "Where local delivery to /file is allowed: alias, forward, include.")
_p("allow_min_user", B, "no", 'Allow addresses that start with "-".')
_p("biff", B, "yes", "Notify the comsat (biff) service of new local mail.")
_p("command_execution_directory", S, "", "The working directory for local delivery to commands.")
_p("command_expansion_filter", S,
   "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
   "Characters allowed in $name expansions of mailbox_command.")
_p("command_time_limit", T, "1000s", "Time limit for local delivery to a command.", lo=1)
_p("deliver_lock_attempts", I, "20", "How often to try to lock a mailbox or log file.", lo=1)
_p("deliver_lock_delay", T, "1s", "The pause between attempts to lock a mailbox or log file.", lo=1)
_p("execution_directory_expansion_filter", S,
   "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
   "Characters allowed in $name expansions of command_execution_directory.")
_p("expand_owner_alias", B, "no",
   "Use the expansion of owner-alias, not the name, as the envelope sender.")
_p("fallback_transport", S, "",
   "Where local delivery sends recipients it cannot find in aliases or passwd.")
_p("fallback_transport_maps", M, "",
   "Per-recipient transports for recipients local delivery cannot find.")
_p("fork_attempts", I, "5", "How often to try to create a child process.", lo=1)
_p("fork_delay", T, "1s", "The pause between attempts to create a child process.", lo=1)
_p("forward_expansion_filter", S,
   "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
   "Characters allowed in $name expansions of forward_path.")
_p("forward_path", L, "$home/.forward${recipient_delimiter}${extension}, $home/.forward",
   "Where local delivery looks for a user's .forward file.")
_p("frozen_delivered_to", B, "yes",
   "Set the Delivered-To: address once per delivery, not per alias or .forward step.")
_p("home_mailbox", S, "", "A mailbox path relative to the user's home; ending in / means Maildir.")
_p("local_command_shell", S, "",
   "The shell for local delivery commands; empty means exec directly or via /bin/sh.")
_p("luser_relay", S, "", "Where mail for unknown local recipients goes.")
_p("mail_spool_directory", S, "/var/mail",
   "The directory with UNIX-style local mailboxes; ending in / means Maildir.")
_p("mailbox_command", S, "", "An external command that delivers to the local mailbox.")
_p("mailbox_command_maps", M, "", "Per-recipient external commands for local mailbox delivery.")
_p("mailbox_delivery_lock", L, "fcntl, dotlock",
   "How local delivery locks an mbox: fcntl, flock, dotlock.")
_p("mailbox_size_limit", Z, "51200000",
   "The maximal size of a local mailbox or Maildir file, in bytes; 0 means no limit.")
_p("mailbox_transport", S, "", "A transport that receives all local mailbox deliveries.")
_p("mailbox_transport_maps", M, "", "Per-recipient transports for local mailbox deliveries.")
_p("owner_request_special", B, "yes",
   "Treat owner-listname and listname-request aliases specially.")
_p("prepend_delivered_header", L, "command, file, forward",
   "When local delivery adds a Delivered-To: header: command, file, forward.")
_p("require_home_directory", B, "no",
   "Defer local delivery when the recipient's home directory is missing.")
_p("reset_owner_alias", B, "no",
   "Forget the owner alias when expanding a child alias that has none.")
_p("stale_lock_time", T, "500s",
   "The age after which a mailbox lock file is considered stale and removed.", lo=1)
_p("strict_mailbox_ownership", B, "yes", "Defer delivery to a mailbox not owned by its recipient.")

# --- virtual delivery ---------------------------------------------------------
_p("virtual_gid_maps", M, "", "Tables with the group ID for each virtual mailbox recipient.")
_p("virtual_mailbox_base", S, "", "The directory prepended to every virtual_mailbox_maps result.")
_p("virtual_mailbox_limit", Z, "51200000",
   "The maximal size of a virtual mailbox or Maildir file, in bytes; 0 means no limit.")
_p("virtual_mailbox_lock", L, "fcntl, dotlock",
   "How virtual delivery locks an mbox: fcntl, flock, dotlock.")
_p("virtual_minimum_uid", I, "100", "The lowest user ID that virtual_uid_maps may return.", lo=1)
_p("virtual_uid_maps", M, "", "Tables with the user ID for each virtual mailbox recipient.")

# --- Maildir++ quota (local and virtual Maildir delivery, smtpd) --------------
_p("hato_mailbox_quota_maps", M, "",
   "Per-recipient Maildir++ quotas (NNNS[,MMMC]) for local and virtual Maildir delivery.")
_p("hato_mailbox_quota_default", S, "",
   "The Maildir++ quota (NNNS[,MMMC]) of recipients the quota maps do not list; empty: none.")
_p("hato_mailbox_quota_create", B, "yes",
   "Write maildirsize into a Maildir that has a quota from the tables but no such file.")
_p("hato_mailbox_quota_bounce", B, "no",
   "Bounce mail for a full Maildir (5.2.2) instead of deferring it (4.2.2).")
_p("hato_mailbox_quota_message", S, "Mailbox full",
   "The text of over-quota bounces, deferrals and RCPT replies.")
_p("hato_mailbox_quota_rcpt_check", B, "no",
   "Let smtpd refuse a recipient whose Maildir is already full (452 or 552).")

# --- bounces, delay warnings, DSN and postmaster notices ----------------------
_p("2bounce_notice_recipient", S, "postmaster",
   "Who receives undeliverable mail that cannot be returned to its sender.")
_p("bounce_notice_recipient", S, "postmaster",
   "Who receives postmaster copies of bounces (with the bounce notify class).")
_p("bounce_size_limit", I, "50000",
   "How much of the original message a non-delivery notification includes, in bytes.", lo=1)
_p("bounce_template_file", S, "",
   "A file with templates for bounce, delay and success notifications.")
_p("confirm_delay_cleared", B, "no",
   "Tell the sender when mail that triggered a delay warning is finally delivered.")
_p("default_delivery_status_filter", M, "",
   "Tables that rewrite the status code or text of delivery results.")
_p("default_verp_delimiters", S, "+=",
   "The two VERP delimiter characters used when none are given.")
_p("delay_notice_recipient", S, "postmaster",
   "Who receives postmaster copies of delay warnings (with the delay notify class).")
_p("disable_verp_bounces", B, "no",
   "Send one bounce for all recipients instead of one per VERP recipient.")
_p("double_bounce_sender", S, "double-bounce",
   "The sender address of mail that the mail system generates for the postmaster.")
_p("empty_address_recipient", S, "MAILER-DAEMON", "Where mail addressed to the null address goes.")
_p("enable_threaded_bounces", B, "no",
   "Add References: and In-Reply-To: to notifications so they thread with the original.")
_p("error_notice_recipient", S, "postmaster",
   "Who receives postmaster reports of resource, software, policy and protocol errors.")
_p("local_delivery_status_filter", M, "$default_delivery_status_filter",
   "Like default_delivery_status_filter, for the local delivery agent.")
_p("notify_classes", L, "resource, software", "Which error classes are reported to the postmaster.")
_p("pipe_delivery_status_filter", M, "$default_delivery_status_filter",
   "Like default_delivery_status_filter, for the pipe delivery agent.")
_p("soft_bounce", B, "no",
   "Turn permanent delivery and reject errors into temporary ones (a safety net).")
_p("verp_delimiter_filter", S, "-=+",
   "The characters accepted as VERP delimiters on the command line and in SMTP.")
_p("virtual_delivery_status_filter", M, "$default_delivery_status_filter",
   "Like default_delivery_status_filter, for the virtual delivery agent.")

# --- sendmail, postdrop, postqueue --------------------------------------------
_p("authorized_flush_users", L, "static:anyone", "Users allowed to flush the queue.")
_p("authorized_mailq_users", L, "static:anyone", "Users allowed to list the queue.")
_p("authorized_submit_users", L, "static:anyone", "Users allowed to submit mail with sendmail.")
_p("empty_address_local_login_sender_maps_lookup_key", S, "<>",
   "The key used instead of the null sender in local_login_sender_maps.")
_p("local_login_sender_maps", M, "static:*",
   "Per-login tables of envelope senders that a local user may use.")
_p("sendmail_fix_line_endings", S, "always",
   "How sendmail converts CRLF line endings: always, strict or never.")

# --- address verification (verify service) ------------------------------------
_p("address_verify_cache_cleanup_interval", T, "12h",
   "The time between clean-ups of the address verification cache; 0 means never.", unit="h")
_p("address_verify_default_transport", S, "$default_transport",
   "default_transport for address verification probes.")
_p("address_verify_local_transport", S, "$local_transport",
   "local_transport for address verification probes.")
_p("address_verify_map", M, "btree:$data_directory/verify_cache",
   "The table that stores address verification results.")
_p("address_verify_negative_cache", B, "yes", "Cache failed address verification results.")
_p("address_verify_negative_expire_time", T, "3d",
   "How long a failed verification result is kept.", lo=1, unit="d")
_p("address_verify_negative_refresh_time", T, "3h",
   "How old a failed verification result may get before it is probed again.", lo=1, unit="h")
_p("address_verify_pending_request_limit", I, "5000",
   "The maximal number of verification probes in progress.", lo=1)
_p("address_verify_poll_count", I, "${stress?{1}:{3}}",
   "How often smtpd asks for a verification result still in progress.", lo=1)
_p("address_verify_poll_delay", T, "3s", "The pause between such queries.", lo=1)
_p("address_verify_positive_expire_time", T, "31d",
   "How long a successful verification result is kept.", lo=1, unit="d")
_p("address_verify_positive_refresh_time", T, "7d",
   "How old a successful verification result may get before it is probed again.", lo=1, unit="d")
_p("address_verify_relay_transport", S, "$relay_transport",
   "relay_transport for address verification probes.")
_p("address_verify_relayhost", S, "$relayhost", "relayhost for address verification probes.")
_p("address_verify_sender", S, "$double_bounce_sender",
   "The sender address of verification probes; <> means the null sender.")
_p("address_verify_sender_dependent_default_transport_maps", M,
   "$sender_dependent_default_transport_maps",
   "sender_dependent_default_transport_maps for verification probes.")
_p("address_verify_sender_dependent_relayhost_maps", M, "$sender_dependent_relayhost_maps",
   "sender_dependent_relayhost_maps for verification probes.")
_p("address_verify_sender_ttl", T, "0s",
   "How often the time-dependent part of the probe sender changes; 0 means never.")
_p("address_verify_service_name", S, "verify",
   "The name of the verify service (its socket in private/).")
_p("address_verify_transport_maps", M, "$transport_maps",
   "transport_maps for address verification probes.")
_p("address_verify_virtual_transport", S, "$virtual_transport",
   "virtual_transport for address verification probes.")
