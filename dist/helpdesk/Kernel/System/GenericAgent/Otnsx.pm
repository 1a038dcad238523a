# --
# otnsx - maintenance access by ticket lock. MIT licensed.
# --
# A Generic Agent module for Znuny 6.3 and later, which no longer run shell commands: select it
# as the job's "Execute Custom Module" on the TicketLockUpdate event. It runs
# `otnsx ticket <TicketID>` without a shell and with a hard timeout, and writes what otnsx said
# to the help desk's log when it fails.
# --

package Kernel::System::GenericAgent::Otnsx;

use strict;
use warnings;

use Encode qw();
use IPC::Open3 qw(open3);
use Symbol qw(gensym);

our @ObjectDependencies = ('Kernel::System::Log');

# The command and its limit; an admin may set them in Kernel/Config.pm's Load(), e.g.
# $Kernel::System::GenericAgent::Otnsx::Command = ['/usr/bin/otnsx', '--config', '/etc/otnsx/otnsx.toml'];
our $Command = [ -x '/usr/bin/otnsx' ? '/usr/bin/otnsx' : '/usr/local/bin/otnsx' ];
our $Timeout = 30;

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

    # A list, not a string: no shell. timeout(1) bounds the agent's wait even if otnsx hangs.
    my @Command = ( '/usr/bin/timeout', '--kill-after=5', $Timeout, @{$Command}, 'ticket', $TicketID );
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
    waitpid( $Pid, 0 );
    my $Exit = $? >> 8;
    return 1 if $Exit == 0;

    # otnsx writes UTF-8; the log wants characters, not bytes (else "wéb" is logged "wÃ©b").
    my $Output = Encode::decode( 'UTF-8', $Bytes );
    $Output =~ s{\s+\z}{};
    if ( length $Output > $MaxLog ) {
        $Output = substr( $Output, 0, $MaxLog ) . '...';
    }
    my $Why = $Exit == 124 ? "did not finish within $Timeout s and was stopped" : "exited $Exit";
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
