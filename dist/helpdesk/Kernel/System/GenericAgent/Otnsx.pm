# --
# otnsx - maintenance access by ticket lock. MIT licensed.
# --
# A Generic Agent module for Znuny 6.3 and later, which no longer run shell commands: select it
# as the job's "Execute Custom Module" on the TicketLockUpdate event. It runs
# `otnsx ticket <TicketID>` without a shell and with a hard timeout, and writes what otnsx said
# to the help desk's log when it fails: its real exit status, or that timeout(1) had to stop it.
#
# Settings: Kernel/Config.pm's Load() may set, for the web server, the daemon and the console
# alike (a value set before this module is loaded is kept; only what is unset gets the default):
#   $Kernel::System::GenericAgent::Otnsx::Command = ['/usr/bin/otnsx', '--config', '/etc/otnsx/otnsx.toml'];
#   $Kernel::System::GenericAgent::Otnsx::Timeout = 30;    # seconds; otnsx's deadline must be shorter
# --

package Kernel::System::GenericAgent::Otnsx;

use strict;
use warnings;

use Encode qw();
use IPC::Open3 qw(open3);
use Symbol qw(gensym);

our @ObjectDependencies = ('Kernel::System::Log');

# The command and its limit, unless Kernel/Config.pm set them first (see above): an
# assignment here would undo what Config.pm set whenever this file is loaded after it.
our $Command;
$Command //= [ -x '/usr/bin/otnsx' ? '/usr/bin/otnsx' : '/usr/local/bin/otnsx' ];
our $Timeout;
$Timeout //= 30;

# How long timeout(1) waits after its SIGTERM before it sends SIGKILL.
my $KillAfter = 5;

# The most of otnsx's output that goes into one log line.
my $MaxLog = 2000;

sub new {
    my ( $Type, %Param ) = @_;
    return bless( {}, $Type );
}

sub Run {
    my ( $Self, %Param ) = @_;

    my $LogObject = $Kernel::OM->Get('Kernel::System::Log');
    my $TicketID  = $Param{TicketID} // '';
    if ( $TicketID !~ m{\A[1-9][0-9]{0,18}\z} ) {
        $LogObject->Log(
            Priority => 'error',
            Message  => 'otnsx: not run: the TicketID is not a number: ' . _Printable($TicketID),
        );
        return;
    }

    # The help desk's daemon ignores SIGCHLD; a child then is reaped by the kernel, waitpid
    # returns -1 and $? is -1 (logged as 72057594037927935). The default, for this call only.
    local $SIG{CHLD} = 'DEFAULT';

    # A list, not a string: no shell. timeout(1) bounds the agent's wait even if otnsx hangs.
    my @Command = (
        '/usr/bin/timeout', "--kill-after=$KillAfter", $Timeout, @{$Command}, 'ticket', $TicketID
    );
    my $In;
    my $Out = gensym();
    my $Pid = eval { open3( $In, $Out, undef, @Command ) };
    if ( !$Pid ) {
        $LogObject->Log( Priority => 'error', Message => "otnsx: cannot run $Command->[0]: $@" );
        return;
    }
    close $In;
    my $Bytes = do { local $/; <$Out> } // '';
    close $Out;
    my $Waited = waitpid( $Pid, 0 );
    my $Status = $?;
    my $Exit   = $Status >> 8;
    my $Signal = $Status & 127;
    my $Why;
    if ( $Waited != $Pid || $Status == -1 ) {
        # No exit status to log: say so rather than a made-up number.
        $Why = "ended, but its exit status is unknown (waitpid: $!)";
    }
    elsif ( $Signal == 9 || ( !$Signal && $Exit == 137 ) ) {
        # timeout's SIGKILL after --kill-after also ends timeout itself (it signals its whole
        # process group), so it is seen as signal 9 rather than as exit 137.
        $Why = "did not finish within $Timeout s nor stop on timeout's SIGTERM, and was killed with SIGKILL $KillAfter s later (or the system killed it)";
    }
    elsif ($Signal) {
        $Why = "was killed by signal $Signal";
    }
    elsif ( $Exit == 0 ) {
        return 1;
    }
    elsif ( $Exit == 124 ) {
        $Why = "did not finish within $Timeout s and was stopped (timeout sent SIGTERM)";
    }
    elsif ( $Exit == 125 || $Exit == 126 || $Exit == 127 ) {
        $Why = "was not run: timeout exited $Exit (125: timeout failed, 126: cannot execute, 127: not found)";
    }
    else {
        $Why = "exited $Exit";
    }

    # otnsx writes UTF-8; the log wants characters, not bytes (else "wéb" is logged "wÃ©b").
    my $Output = Encode::decode( 'UTF-8', $Bytes );
    $Output =~ s{\s+\z}{};
    if ( length $Output > $MaxLog ) {
        $Output = substr( $Output, 0, $MaxLog ) . '...';
    }
    $LogObject->Log(
        Priority => 'error',
        Message  => "otnsx ticket $TicketID $Why: " . _Printable($Output),
    );
    return 1;
}

# Control characters escaped, so that one failure is one log line.
sub _Printable {
    my ($Text) = @_;
    $Text =~ s{([\x00-\x1f\x7f])}{sprintf('\\x%02x', ord $1)}ge;
    return $Text;
}

1;
