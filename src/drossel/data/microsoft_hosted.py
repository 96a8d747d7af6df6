"""Microsoft-hosted mail of every era, as data: the host families and build ranges that Exchange
Online and its filtering layers stamped into ``Received:`` lines from about 2008 to today.

Detection skips a hop written by one of these hosts whatever build it stamps: the service ran
builds that look like on-premises ones (FOPE hubs stamped Exchange 2007 and 2010 ids, Exchange
Online 14.16.x, 15.0.x and 15.1.x in 2012-2017).  Every entry names a public source where the
host family or build can be seen; ``lore`` means the public-inbox archives of the Linux kernel
mailing lists (lore.kernel.org, mirrored in the stored ``linux-mailinglist-archives``
repositories), the message cited by list and date.

This is plain data (no code runs here); ``drossel.core.hosted`` validates and compiles it.  To
add a family, append an entry with its source and run ``tests/core/test_hosted.py``.
"""

HOST_FAMILIES: tuple[dict[str, str], ...] = (
    # ---- Exchange Online (Office 365) ------------------------------------------------------
    {
        "suffix": ".outlook.com",
        "service": "Exchange Online and Exchange Online Protection (outlook.com zone)",
        "era": "2011-today",
        "examples": "BLUPR03MB018.namprd03.prod.outlook.com, pod51018.outlook.com, "
        "BY2FFO11FD029.mail.protection.outlook.com, "
        "VE1EUR02HT154.eop-EUR02.prod.protection.outlook.com, "
        "NAM03-BY2-obe.outbound.protection.outlook.com",
        "source": "lore git@vger 2013-03-18 (namprd03 hubs stamping 14.16.287.2 and "
        "15.0.620.20); lore linux-gpio 2013-08-14 (pod51018.outlook.com stamping 14.16.347.3); "
        "lore git@vger 2015-03-06 (FFO11FD.mail.protection.outlook.com 15.1.112.13); "
        "research/exchange-headers.md section 2.8",
    },
    {
        "suffix": ".office365.com",
        "service": "Exchange Online client/front-end access (CAFE) hops (outlook.office365.com)",
        "era": "2013-today",
        "examples": "CO2PR07CA008.outlook.office365.com, DB4PR02CA0019.outlook.office365.com",
        "source": "unomaha email-header exercise (2013-12-10, 15.0.800.7 via Frontend "
        "Transport); lore vger 2015-10-18 (15.1.300.14); lore vger 2017-01-11 (15.1.845.12)",
    },
    {
        "suffix": ".exchangelabs.com",
        "service": "Exchange Online internal pods (prod.exchangelabs.com hub domain)",
        "era": "2011-today",
        "examples": "AM4PR01MB1444.eurprd01.prod.exchangelabs.com, "
        "SJ2PR01MB8101.prod.exchangelabs.com",
        "source": "lore archives 2017-11-15 (15.20.218.12), 2019-09-13, 2024-03-05, "
        "2026-07-14 (15.21.202.18); research/exchange-headers.md section 2.8",
    },
    {
        "suffix": ".protection.gbl",
        "service": "Exchange Online Protection (FFO) internal hub names",
        "era": "2012-2018",
        "examples": "BL2FFO11HUB016.protection.gbl, BY2FFO11HUB020.protection.gbl",
        "source": "lore git@vger 2013-02-20 and 2013-03-18 (15.0.620.12, 15.0.641.9); "
        "lore linux-mips 2015-10-14 (15.1.293.9)",
    },
    {
        "suffix": ".msft.net",
        "service": "Exchange Online Dedicated (BPOS-D): customer-dedicated Exchange run by "
        "Microsoft",
        "era": "2010-2015",
        "examples": "039-SN1MMR1-003.039d.mgd.msft.net",
        "source": "lore linux-mips 2012-08-15 (14.2.298.5) and 2013-11-20 (14.3.158.2), "
        "Freescale mail through CO1EHSMHS013.bigfish.com",
    },
    # ---- Forefront Online Protection for Exchange / FrontBridge (pre-EOP filtering) ---------
    {
        "suffix": ".microsoftonline.com",
        "service": "Business Productivity Online Suite (BPOS), Exchange Online before Office 365",
        "era": "2008-2012",
        "examples": "smtp.mail.microsoftonline.com, smtp.mail.emea.microsoftonline.com",
        "source": "blogs.technet.com/bpositive/archive/2009/09/01/"
        "smtp-enabled-for-bpos-worldwide.aspx (Microsoft Online SMTP servers per datacenter)",
    },
    {
        "suffix": ".bigfish.com",
        "service": "Forefront Online Protection for Exchange (FOPE) and Exchange Hosted "
        "Services hubs",
        "era": "2008-2014",
        "examples": "VA3EHSOBE006.bigfish.com, CH1EHSMHS027.bigfish.com, mail210-ch1-R.bigfish.com",
        "source": "lore linux-mips 2009-02-26 (8.1.340.0); lore git@vger 2008-07-30 "
        "(8.1.240.5), 2011-04-22 (14.1.225.8), 2012-12-21 (14.1.225.23); cygwin-patches "
        "2014-03-20 (AM1EHSMHS018.bigfish.com 14.16.227.3)",
    },
    {
        "suffix": ".messaging.microsoft.com",
        "service": "FOPE outbound pools (xxxoutboundpool / xxxehsobe hosts)",
        "era": "2009-2014",
        "examples": "ch1outboundpool.messaging.microsoft.com, va3ehsobe005.messaging.microsoft.com",
        "source": "lore linux-mips 2009-02-26; lore git@vger 2012-02-16, 2012-12-21; "
        "cygwin-patches 2014-03-20",
    },
    {
        "suffix": ".microsoft.com",
        "service": "Microsoft's own mail relays and corporate (dogfood) Exchange, run and patched "
        "by Microsoft",
        "era": "2008-today",
        "examples": "mail.microsoft.com, TK5EX14HUBC106.redmond.corp.microsoft.com",
        "source": "lore git@vger 2013-03-18 (va3outboundpool.messaging.microsoft.com to "
        "mail.microsoft.com 14.2.318.3; TK5EX14HUBC106.redmond.corp.microsoft.com to "
        "BL2FFO11FD010.mail.protection.outlook.com 15.0.641.9)",
    },
    {
        "suffix": ".frontbridge.com",
        "service": "FrontBridge (Microsoft Exchange Hosted Filtering, predecessor of FOPE)",
        "era": "2005-2012",
        "examples": "outbound-va3.frontbridge.com, corpf5vips-237160.customer.frontbridge.com",
        "source": "lore git@vger 2008-07-30 (outbound-va3.frontbridge.com in front of "
        "VA3EHSOBE001.bigfish.com); X-FOPE-CONNECTOR header of lore git@vger 2013-03-18; "
        "mt.gov Forefront Online Security for Exchange FAQ (abuse@frontbridge.com)",
    },
    # ---- national and government clouds ----------------------------------------------------
    {
        "suffix": ".outlook.cn",
        "service": "Office 365 operated by 21Vianet (China)",
        "era": "2014-today",
        "examples": "NT0PR01MB1278.CHNPR01.prod.partner.outlook.cn, "
        "CHN02-BJS-obe.outbound.protection.partner.outlook.cn",
        "source": "lore qemu-devel 2024-05-02 and 2024-08-20 (15.20.x on CHNPR01 pods); "
        "lore linux-gpio 2026-05-15 (outbound.protection.partner.outlook.cn)",
    },
    {
        "suffix": ".office365.us",
        "service": "Office 365 GCC High / DoD (US government cloud)",
        "era": "2017-today",
        "examples": "USG02-BN3-obe.outbound.protection.office365.us, "
        "tenant.mail.protection.office365.us",
        "source": "lore linux-gpio 2024-12-23; xen-devel 2020-05-12; boeing.com chain "
        "2025-07-17 (USG02-BN3-obe then NAMP110.PROD.OUTLOOK.COM pods); Learn GCC High DNS "
        "table (*.mail.protection.office365.us)",
    },
    {
        "suffix": ".outlook.de",
        "service": "Microsoft Cloud Deutschland (Office 365 operated under a German data "
        "trustee, closed 2021)",
        "era": "2016-2021",
        "examples": "FRAPR01MB1170.DEUPRD01.PROD.OUTLOOK.DE, "
        "GER01-LEJ-obe.outbound.protection.outlook.de, tenant.mail.protection.outlook.de",
        "source": "lore netdev 2018-12-06, 2019-04-30 and 2019-06-13 (telekom.de mail from "
        "FRAPR01MB1170.DEUPRD01.PROD.OUTLOOK.DE stamping 15.20.1835.14, out through "
        "GER01-LEJ-obe / GER01-FRA-obe.outbound.protection.outlook.de into the company's own "
        "Exchange 2013); MicrosoftDocs office-docs (o365-germany MX "
        "<token>.mail.protection.outlook.de); learn.microsoft.com/azure/germany (Microsoft Cloud "
        "Germany, a separate instance closed 2021-10-29)",
    },
    # ---- consumer mail (Hotmail / Outlook.com) ---------------------------------------------
    {
        "suffix": ".hotmail.com",
        "service": "Hotmail / Outlook.com consumer mail hubs",
        "era": "1997-2017",
        "examples": "blu0-omc3-s29.blu0.hotmail.com, BAYC1-PASMTP05.bayc1.hotmail.com",
        "source": "lore git@vger 2007-07-15, 2012-03-28, 2014-05-04",
    },
    {
        "suffix": ".phx.gbl",
        "service": "Hotmail / Outlook.com consumer internal hosts",
        "era": "2005-2017",
        "examples": "BLU0-SMTP479.phx.gbl, BLU0-SMTP38.phx.gbl",
        "source": "lore git@vger 2012-03-28 and 2014-05-04",
    },
    {
        "suffix": ".hotmail.msn.com",
        "service": "MSN Hotmail web front ends",
        "era": "1999-2012",
        "examples": "by130fd.bay130.hotmail.msn.com",
        "source": "lore git@vger 2007-01-31",
    },
)
"""Domains whose hosts belong to Microsoft's hosted mail services (suffix match on a label
boundary; the suffix without its leading dot matches the bare domain too)."""

POD_NAME_PATTERNS: tuple[dict[str, str], ...] = (
    {
        "pattern": r"[a-z]{2,3}[0-9]?[a-z]?p(?:rd[0-9]{4}|r[0-9]{2,4}|[0-9]{3})"
        r"(?:mb|ca|ht|cu|hu|db|ms)[0-9]{2,6}",
        "service": "Exchange Online mailbox, client-access and hub machines",
        "examples": "BLUPR03MB018, BY2PRD0712HT004, CO2PR07CA008, SJ2PR01MB8101, "
        "SA1P110MB2155, LV0PR01MB994054, CY4PR1201MB2549, BY1PR0201CA0004",
        "source": "lore git@vger 2013-03-18; linux-gpio 2013-06-20; unomaha exercise 2013; "
        "lore 2024-03-05 and 2026-07-14; boeing.com chain 2025-07-17",
    },
    {
        "pattern": r"[a-z]{2,3}[0-9][a-z]?ffo[0-9]{2}(?:fd|hub)[0-9]{3}",
        "service": "Exchange Online Protection front door and hub machines (FFO)",
        "examples": "BN1BFFO11FD039, BY2FFO11HUB020, DB3FFO11FD026",
        "source": "unomaha exercise 2013-12-10; lore linux-mips 2015-10-14; lore vger 2015-10-18",
    },
    {
        # the zone is a three-letter region code (eur, nam, apc, gcc, usg ...): new regions
        # get new codes, so any three letters are accepted in that position
        "pattern": r"[a-z]{2,3}[0-9][a-z]{3}[0-9]{2}(?:ft|ht)[0-9]{3}",
        "service": "Exchange Online Protection forest machines (eop-* zones)",
        "examples": "VE1EUR02FT050, VE1EUR02HT154, DM6NAM11FT067, BL0GCC02FT048",
        "source": "lore archives 2019-12-20 and 2020-03-10; BL0GCC02FT048.eop-gcc02.prod."
        "protection.outlook.com (GCC, 2023-02-10) in a stored mail-parser test fixture",
    },
    {
        "pattern": r"[a-z]{2,3}[0-9]ehs(?:obe|mhs)[0-9]{3}",
        "service": "FOPE / Exchange Hosted Services inbound and outbound machines",
        "examples": "CH1EHSOBE005, VA3EHSMHS038, TX2EHSMHS007",
        "source": "lore git@vger 2012-12-21 and 2013-03-18; unomaha exercise 2013-01-17",
    },
    {
        "pattern": r"[a-z]{2,3}[0-9]{1,2}p?epf[0-9a-f]{8}",
        "service": "Exchange Online Protection front-door machines (PEPF/EPF names)",
        "examples": "SA2PEPF00003AEA, SJ1PEPF00001CE1, CY4PEPF0000E9D1, CH2PEPF000000A0, "
        "BL02EPF0001A100, BL6PEPF00013DF9",
        "source": "lore archives 2023-06-08, 2024-04-29, 2024-10-16, 2024-11-25 "
        "(*.namprd0N.prod.outlook.com to *.outlook.office365.com via Frontend Transport); "
        "lore 2023-09-28, 2025-05-18 and 2025-10-15 (BL02EPF0001A1xx.namprd0N.prod.outlook.com, "
        "two-digit site); xen-devel 2025-05-26 (BL6PEPF00013DF9.NAMP222.PROD.OUTLOOK.COM)",
    },
    {
        "pattern": r"[a-z]{3}[0-9]{2}-[a-z0-9]{2,3}-obe",
        "service": "Exchange Online Protection outbound pools (<zone>-<site>-obe names)",
        "examples": "NAM04-DM6-obe, EUR03-DBA-obe, JPN01-OS0-obe, GER01-LEJ-obe, USG02-BN3-obe, "
        "CHN02-BJS-obe",
        "source": "lore linux-kernel 2022-10-31 (JPN01-OS0-obe), 2023-05-06 (EUR03-DBA-obe), "
        "2023-05-25 (NAM04-DM6-obe into microchip.com's Exchange 2016); lore netdev 2019-04-30 "
        "(GER01-LEJ-obe.outbound.protection.outlook.de)",
    },
    {
        "pattern": r"mail-(?:[a-z]{2,3}[0-9]?[a-z]{3}[0-9]{2}(?:on|hn|lp)[0-9]{4}"
        r"|[a-z]+azon[0-9]{8})",
        "service": "Exchange Online Protection outbound machines (mail-*.outbound.protection "
        "names)",
        "examples": "mail-bn8nam04on2046, mail-dbaeur03on2058, mail-os0jpn01on2095, "
        "mail-db3eur04hn0305, mail-westeuropeazon11012039, mail-japaneastazon11011015",
        "source": "lore kvm 2022-11-29 (mail-bn8nam04on2046), linux-kernel 2022-10-31 and "
        "2023-05-06; lore linuxppc-dev (mail-db3eur04hn0305, IPv6 2a01:111:f400::); lore "
        "linux-media and linux-spi 2025 (mail-*azon*.outbound.protection.outlook.com)",
    },
    {
        "pattern": r"[0-9]{3}-[a-z]{2,3}[0-9]m[a-z]{2}[0-9]-[0-9]{3}",
        "service": "Exchange Online Dedicated (BPOS-D) machines (NNN-<site>M<role>N-NNN names)",
        "examples": "039-SN1MMR1-003, 039-SN1MPN1-005, 039-SN2MPN1-021, 048-CH1MPN1-032",
        "source": "lore netdev 2011-11-10 (039-SN1MPN1-005.039d.mgd.msft.net mapi "
        "14.01.0339.002); lore linux-mips 2012-08-15; lore git@vger 2013-06-17 "
        "(048-CH1MPN1-032.048d.mgd.msft.net)",
    },
    {
        "pattern": r"pod5[0-9]{4}",
        "service": "Exchange Online (Wave 14) client pods",
        "examples": "pod51018.outlook.com, pod51011.outlook.com",
        "source": "lore linux-gpio 2013-06-20 and 2013-08-14; lore 2014-04-07; pastebin "
        "GF5yxC8c (https://pod51013.outlook.com/owa/ and /ews/ endpoints)",
    },
)
"""Machine names (the first label of a host, matched whole, case-insensitively) that only
Microsoft's datacentres use.  They catch hosted hops whose domain was cut off or rewritten
(truncated headers, hosts written without their zone)."""

BUILD_RANGES: tuple[dict[str, str], ...] = (
    {
        "low": "14.4.0.0",
        "high": "14.99.99999.99999",
        "service": "Exchange Online and FOPE service builds of the Exchange 2010 era (14.16.x)",
        "why": "on-premises Exchange 2010 only ever had 14.0 (RTM) to 14.3 (SP3)",
        "source": "lore git@vger 2013-03-18 (14.16.287.2), linux-gpio 2013-06-20 "
        "(14.16.293.5), cygwin-patches 2014-03-20 (14.16.227.3, 14.16.423.0), unomaha "
        "exercise 2013-01-17 (14.16.257.4); catalog: no 2010 release above 14.3",
    },
    {
        "low": "15.20.0.0",
        "high": "15.99.99999.99999",
        "service": "Exchange Online itself (15.20.x since 2017, 15.21.x in 2026)",
        "why": "no on-premises product uses a 15 minor of 20 or more (SPEC section 2)",
        "source": "lore 2017-11-15 (15.20.218.12) and 2026-07-14 (15.21.202.18); "
        "research/exchange-headers.md section 1",
    },
)
"""Build ranges (inclusive) that only Microsoft's hosted service ever stamped."""
