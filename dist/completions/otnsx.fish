# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_otnsx_global_optspecs
    string join \n config= dry-run json q/quiet v/verbose h/help V/version
end

function __fish_otnsx_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_otnsx_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_otnsx_using_subcommand
    set -l cmd (__fish_otnsx_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c otnsx -n "__fish_otnsx_needs_command" -l config -d 'Configuration file [default: /etc/otnsx/otnsx.toml, else the user\'s config directory]' -r -F
complete -c otnsx -n "__fish_otnsx_needs_command" -l dry-run -d 'Resolve everything and print what would change; change nothing (grant, revoke, reconcile, a ticket event)'
complete -c otnsx -n "__fish_otnsx_needs_command" -l json -d 'Print one JSON document on one line, also on failure (see JSON OUTPUT in the man page)'
complete -c otnsx -n "__fish_otnsx_needs_command" -s q -l quiet -d 'Print nothing on stdout; errors still go to stderr, the exit status tells the rest'
complete -c otnsx -n "__fish_otnsx_needs_command" -s v -l verbose -d 'Print each request to the services (without secrets) on stderr'
complete -c otnsx -n "__fish_otnsx_needs_command" -s h -l help -d 'Print help'
complete -c otnsx -n "__fish_otnsx_needs_command" -s V -l version -d 'Print version'
complete -c otnsx -n "__fish_otnsx_needs_command" -a "check" -d 'Check the configuration and every service; the first command after install'
complete -c otnsx -n "__fish_otnsx_needs_command" -a "completions" -d 'Print the completion script for a shell (bash, zsh, fish, elvish, powershell)'
complete -c otnsx -n "__fish_otnsx_needs_command" -a "ticket" -d 'Apply a ticket\'s lock state, for callers that know only the ticket\'s ID'
complete -c otnsx -n "__fish_otnsx_needs_command" -a "grant" -d 'Open VMs by hand, for a while'
complete -c otnsx -n "__fish_otnsx_needs_command" -a "revoke" -d 'Close VMs opened by hand; with --all, close every VM at once'
complete -c otnsx -n "__fish_otnsx_needs_command" -a "reconcile" -d 'Make NSX match the leases: expiry, unlocked tickets, drift (run it from a timer)'
complete -c otnsx -n "__fish_otnsx_needs_command" -a "history" -d 'The journal as access periods, refusals and failures, for the audit'
complete -c otnsx -n "__fish_otnsx_needs_command" -a "status" -d 'Show which VMs are open, for whom, until when, and whether NSX agrees'
complete -c otnsx -n "__fish_otnsx_needs_command" -a "state" -d 'The PostgreSQL state backend\'s schema, and moving a state directory into it'
complete -c otnsx -n "__fish_otnsx_needs_command" -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c otnsx -n "__fish_otnsx_using_subcommand check" -l ticket -d 'A ticket whose VM field to check (default: any ticket the API user may read)' -r
complete -c otnsx -n "__fish_otnsx_using_subcommand check" -l config -d 'Configuration file [default: /etc/otnsx/otnsx.toml, else the user\'s config directory]' -r -F
complete -c otnsx -n "__fish_otnsx_using_subcommand check" -l note -d 'Also add one internal note to that ticket, to test the note permission'
complete -c otnsx -n "__fish_otnsx_using_subcommand check" -l dry-run -d 'Resolve everything and print what would change; change nothing (grant, revoke, reconcile, a ticket event)'
complete -c otnsx -n "__fish_otnsx_using_subcommand check" -l json -d 'Print one JSON document on one line, also on failure (see JSON OUTPUT in the man page)'
complete -c otnsx -n "__fish_otnsx_using_subcommand check" -s q -l quiet -d 'Print nothing on stdout; errors still go to stderr, the exit status tells the rest'
complete -c otnsx -n "__fish_otnsx_using_subcommand check" -s v -l verbose -d 'Print each request to the services (without secrets) on stderr'
complete -c otnsx -n "__fish_otnsx_using_subcommand check" -s h -l help -d 'Print help'
complete -c otnsx -n "__fish_otnsx_using_subcommand completions" -l config -d 'Configuration file [default: /etc/otnsx/otnsx.toml, else the user\'s config directory]' -r -F
complete -c otnsx -n "__fish_otnsx_using_subcommand completions" -l dry-run -d 'Resolve everything and print what would change; change nothing (grant, revoke, reconcile, a ticket event)'
complete -c otnsx -n "__fish_otnsx_using_subcommand completions" -l json -d 'Print one JSON document on one line, also on failure (see JSON OUTPUT in the man page)'
complete -c otnsx -n "__fish_otnsx_using_subcommand completions" -s q -l quiet -d 'Print nothing on stdout; errors still go to stderr, the exit status tells the rest'
complete -c otnsx -n "__fish_otnsx_using_subcommand completions" -s v -l verbose -d 'Print each request to the services (without secrets) on stderr'
complete -c otnsx -n "__fish_otnsx_using_subcommand completions" -s h -l help -d 'Print help'
complete -c otnsx -n "__fish_otnsx_using_subcommand ticket" -l number -d 'The ticket\'s number; when given, it must match the ticket' -r
complete -c otnsx -n "__fish_otnsx_using_subcommand ticket" -l config -d 'Configuration file [default: /etc/otnsx/otnsx.toml, else the user\'s config directory]' -r -F
complete -c otnsx -n "__fish_otnsx_using_subcommand ticket" -l dry-run -d 'Resolve everything and print what would change; change nothing (grant, revoke, reconcile, a ticket event)'
complete -c otnsx -n "__fish_otnsx_using_subcommand ticket" -l json -d 'Print one JSON document on one line, also on failure (see JSON OUTPUT in the man page)'
complete -c otnsx -n "__fish_otnsx_using_subcommand ticket" -s q -l quiet -d 'Print nothing on stdout; errors still go to stderr, the exit status tells the rest'
complete -c otnsx -n "__fish_otnsx_using_subcommand ticket" -s v -l verbose -d 'Print each request to the services (without secrets) on stderr'
complete -c otnsx -n "__fish_otnsx_using_subcommand ticket" -s h -l help -d 'Print help'
complete -c otnsx -n "__fish_otnsx_using_subcommand grant" -l vm -d 'The VM\'s name in vCenter (repeatable)' -r
complete -c otnsx -n "__fish_otnsx_using_subcommand grant" -l for -d 'How long [default: policy.manual_duration]' -r
complete -c otnsx -n "__fish_otnsx_using_subcommand grant" -l reason -d 'Why, for the journal' -r
complete -c otnsx -n "__fish_otnsx_using_subcommand grant" -l profile -d 'The access profile [default: policy.default_profile]' -r
complete -c otnsx -n "__fish_otnsx_using_subcommand grant" -l config -d 'Configuration file [default: /etc/otnsx/otnsx.toml, else the user\'s config directory]' -r -F
complete -c otnsx -n "__fish_otnsx_using_subcommand grant" -l dry-run -d 'Resolve everything and print what would change; change nothing (grant, revoke, reconcile, a ticket event)'
complete -c otnsx -n "__fish_otnsx_using_subcommand grant" -l json -d 'Print one JSON document on one line, also on failure (see JSON OUTPUT in the man page)'
complete -c otnsx -n "__fish_otnsx_using_subcommand grant" -s q -l quiet -d 'Print nothing on stdout; errors still go to stderr, the exit status tells the rest'
complete -c otnsx -n "__fish_otnsx_using_subcommand grant" -s v -l verbose -d 'Print each request to the services (without secrets) on stderr'
complete -c otnsx -n "__fish_otnsx_using_subcommand grant" -s h -l help -d 'Print help'
complete -c otnsx -n "__fish_otnsx_using_subcommand revoke" -l vm -d 'The VM\'s name in vCenter (repeatable)' -r
complete -c otnsx -n "__fish_otnsx_using_subcommand revoke" -l config -d 'Configuration file [default: /etc/otnsx/otnsx.toml, else the user\'s config directory]' -r -F
complete -c otnsx -n "__fish_otnsx_using_subcommand revoke" -l force -d 'Close the VM even while tickets hold it (drops every lease on it)'
complete -c otnsx -n "__fish_otnsx_using_subcommand revoke" -l all -d 'Emergency: detach the tag from every VM that carries it, drop every lease'
complete -c otnsx -n "__fish_otnsx_using_subcommand revoke" -l dry-run -d 'Resolve everything and print what would change; change nothing (grant, revoke, reconcile, a ticket event)'
complete -c otnsx -n "__fish_otnsx_using_subcommand revoke" -l json -d 'Print one JSON document on one line, also on failure (see JSON OUTPUT in the man page)'
complete -c otnsx -n "__fish_otnsx_using_subcommand revoke" -s q -l quiet -d 'Print nothing on stdout; errors still go to stderr, the exit status tells the rest'
complete -c otnsx -n "__fish_otnsx_using_subcommand revoke" -s v -l verbose -d 'Print each request to the services (without secrets) on stderr'
complete -c otnsx -n "__fish_otnsx_using_subcommand revoke" -s h -l help -d 'Print help'
complete -c otnsx -n "__fish_otnsx_using_subcommand reconcile" -l config -d 'Configuration file [default: /etc/otnsx/otnsx.toml, else the user\'s config directory]' -r -F
complete -c otnsx -n "__fish_otnsx_using_subcommand reconcile" -l dry-run -d 'Resolve everything and print what would change; change nothing (grant, revoke, reconcile, a ticket event)'
complete -c otnsx -n "__fish_otnsx_using_subcommand reconcile" -l json -d 'Print one JSON document on one line, also on failure (see JSON OUTPUT in the man page)'
complete -c otnsx -n "__fish_otnsx_using_subcommand reconcile" -s q -l quiet -d 'Print nothing on stdout; errors still go to stderr, the exit status tells the rest'
complete -c otnsx -n "__fish_otnsx_using_subcommand reconcile" -s v -l verbose -d 'Print each request to the services (without secrets) on stderr'
complete -c otnsx -n "__fish_otnsx_using_subcommand reconcile" -s h -l help -d 'Print help'
complete -c otnsx -n "__fish_otnsx_using_subcommand history" -l since -d 'Only what happened since then: a duration back from now (7d) or a date' -r
complete -c otnsx -n "__fish_otnsx_using_subcommand history" -l vm -d 'Only this VM' -r
complete -c otnsx -n "__fish_otnsx_using_subcommand history" -l ticket -d 'Only this ticket (number or ID)' -r
complete -c otnsx -n "__fish_otnsx_using_subcommand history" -l config -d 'Configuration file [default: /etc/otnsx/otnsx.toml, else the user\'s config directory]' -r -F
complete -c otnsx -n "__fish_otnsx_using_subcommand history" -l verify -d 'Check the journal\'s hash chain too: exit 65 if an entry was changed, removed or inserted'
complete -c otnsx -n "__fish_otnsx_using_subcommand history" -l dry-run -d 'Resolve everything and print what would change; change nothing (grant, revoke, reconcile, a ticket event)'
complete -c otnsx -n "__fish_otnsx_using_subcommand history" -l json -d 'Print one JSON document on one line, also on failure (see JSON OUTPUT in the man page)'
complete -c otnsx -n "__fish_otnsx_using_subcommand history" -s q -l quiet -d 'Print nothing on stdout; errors still go to stderr, the exit status tells the rest'
complete -c otnsx -n "__fish_otnsx_using_subcommand history" -s v -l verbose -d 'Print each request to the services (without secrets) on stderr'
complete -c otnsx -n "__fish_otnsx_using_subcommand history" -s h -l help -d 'Print help'
complete -c otnsx -n "__fish_otnsx_using_subcommand status" -l vm -d 'Only this VM' -r
complete -c otnsx -n "__fish_otnsx_using_subcommand status" -l config -d 'Configuration file [default: /etc/otnsx/otnsx.toml, else the user\'s config directory]' -r -F
complete -c otnsx -n "__fish_otnsx_using_subcommand status" -l dry-run -d 'Resolve everything and print what would change; change nothing (grant, revoke, reconcile, a ticket event)'
complete -c otnsx -n "__fish_otnsx_using_subcommand status" -l json -d 'Print one JSON document on one line, also on failure (see JSON OUTPUT in the man page)'
complete -c otnsx -n "__fish_otnsx_using_subcommand status" -s q -l quiet -d 'Print nothing on stdout; errors still go to stderr, the exit status tells the rest'
complete -c otnsx -n "__fish_otnsx_using_subcommand status" -s v -l verbose -d 'Print each request to the services (without secrets) on stderr'
complete -c otnsx -n "__fish_otnsx_using_subcommand status" -s h -l help -d 'Print help'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and not __fish_seen_subcommand_from migrate import help" -l config -d 'Configuration file [default: /etc/otnsx/otnsx.toml, else the user\'s config directory]' -r -F
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and not __fish_seen_subcommand_from migrate import help" -l dry-run -d 'Resolve everything and print what would change; change nothing (grant, revoke, reconcile, a ticket event)'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and not __fish_seen_subcommand_from migrate import help" -l json -d 'Print one JSON document on one line, also on failure (see JSON OUTPUT in the man page)'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and not __fish_seen_subcommand_from migrate import help" -s q -l quiet -d 'Print nothing on stdout; errors still go to stderr, the exit status tells the rest'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and not __fish_seen_subcommand_from migrate import help" -s v -l verbose -d 'Print each request to the services (without secrets) on stderr'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and not __fish_seen_subcommand_from migrate import help" -s h -l help -d 'Print help'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and not __fish_seen_subcommand_from migrate import help" -f -a "migrate" -d 'Create the tables, or bring them to this otnsx\'s schema version (idempotent)'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and not __fish_seen_subcommand_from migrate import help" -f -a "import" -d 'Move a state directory\'s leases.json and journal.jsonl into the database'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and not __fish_seen_subcommand_from migrate import help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from migrate" -l config -d 'Configuration file [default: /etc/otnsx/otnsx.toml, else the user\'s config directory]' -r -F
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from migrate" -l dry-run -d 'Resolve everything and print what would change; change nothing (grant, revoke, reconcile, a ticket event)'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from migrate" -l json -d 'Print one JSON document on one line, also on failure (see JSON OUTPUT in the man page)'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from migrate" -s q -l quiet -d 'Print nothing on stdout; errors still go to stderr, the exit status tells the rest'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from migrate" -s v -l verbose -d 'Print each request to the services (without secrets) on stderr'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from migrate" -s h -l help -d 'Print help'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from import" -l from-file -d 'The state directory to read (it is left as it is)' -r -F
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from import" -l config -d 'Configuration file [default: /etc/otnsx/otnsx.toml, else the user\'s config directory]' -r -F
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from import" -l dry-run -d 'Resolve everything and print what would change; change nothing (grant, revoke, reconcile, a ticket event)'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from import" -l json -d 'Print one JSON document on one line, also on failure (see JSON OUTPUT in the man page)'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from import" -s q -l quiet -d 'Print nothing on stdout; errors still go to stderr, the exit status tells the rest'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from import" -s v -l verbose -d 'Print each request to the services (without secrets) on stderr'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from help" -f -a "migrate" -d 'Create the tables, or bring them to this otnsx\'s schema version (idempotent)'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from help" -f -a "import" -d 'Move a state directory\'s leases.json and journal.jsonl into the database'
complete -c otnsx -n "__fish_otnsx_using_subcommand state; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c otnsx -n "__fish_otnsx_using_subcommand help; and not __fish_seen_subcommand_from check completions ticket grant revoke reconcile history status state help" -f -a "check" -d 'Check the configuration and every service; the first command after install'
complete -c otnsx -n "__fish_otnsx_using_subcommand help; and not __fish_seen_subcommand_from check completions ticket grant revoke reconcile history status state help" -f -a "completions" -d 'Print the completion script for a shell (bash, zsh, fish, elvish, powershell)'
complete -c otnsx -n "__fish_otnsx_using_subcommand help; and not __fish_seen_subcommand_from check completions ticket grant revoke reconcile history status state help" -f -a "ticket" -d 'Apply a ticket\'s lock state, for callers that know only the ticket\'s ID'
complete -c otnsx -n "__fish_otnsx_using_subcommand help; and not __fish_seen_subcommand_from check completions ticket grant revoke reconcile history status state help" -f -a "grant" -d 'Open VMs by hand, for a while'
complete -c otnsx -n "__fish_otnsx_using_subcommand help; and not __fish_seen_subcommand_from check completions ticket grant revoke reconcile history status state help" -f -a "revoke" -d 'Close VMs opened by hand; with --all, close every VM at once'
complete -c otnsx -n "__fish_otnsx_using_subcommand help; and not __fish_seen_subcommand_from check completions ticket grant revoke reconcile history status state help" -f -a "reconcile" -d 'Make NSX match the leases: expiry, unlocked tickets, drift (run it from a timer)'
complete -c otnsx -n "__fish_otnsx_using_subcommand help; and not __fish_seen_subcommand_from check completions ticket grant revoke reconcile history status state help" -f -a "history" -d 'The journal as access periods, refusals and failures, for the audit'
complete -c otnsx -n "__fish_otnsx_using_subcommand help; and not __fish_seen_subcommand_from check completions ticket grant revoke reconcile history status state help" -f -a "status" -d 'Show which VMs are open, for whom, until when, and whether NSX agrees'
complete -c otnsx -n "__fish_otnsx_using_subcommand help; and not __fish_seen_subcommand_from check completions ticket grant revoke reconcile history status state help" -f -a "state" -d 'The PostgreSQL state backend\'s schema, and moving a state directory into it'
complete -c otnsx -n "__fish_otnsx_using_subcommand help; and not __fish_seen_subcommand_from check completions ticket grant revoke reconcile history status state help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c otnsx -n "__fish_otnsx_using_subcommand help; and __fish_seen_subcommand_from state" -f -a "migrate" -d 'Create the tables, or bring them to this otnsx\'s schema version (idempotent)'
complete -c otnsx -n "__fish_otnsx_using_subcommand help; and __fish_seen_subcommand_from state" -f -a "import" -d 'Move a state directory\'s leases.json and journal.jsonl into the database'
